// Package pprofmux is net/http/pprof's handlers on a mux of their own, for
// the kernel's serve -pprof and a plugin's SWITCHYARD_PPROF alike (neither
// uses http.DefaultServeMux, where importing net/http/pprof puts them).
package pprofmux

import (
	"net/http"
	"net/http/pprof"
)

// New returns a handler serving the profiles under /debug/pprof/.
func New() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

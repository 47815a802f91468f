package main

import (
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// defaultPath is PATH for scripts when the plugin has none (the kernel
// starts plugins without its own environment), as net/http/cgi sets it.
const defaultPath = "/bin:/usr/bin:/usr/ucb:/usr/bsd:/usr/local/bin"

// inheritEnv are variables passed from the plugin's environment to
// scripts, as net/http/cgi passes them on Linux.
var inheritEnv = []string{"LD_LIBRARY_PATH"}

// env returns the script's environment: the RFC 3875 meta-variables, built
// as net/http/cgi's Handler builds them, then the env setting, whose
// variables win over those of the same name.
func (x *run) env(r *http.Request) []string {
	port := "80"
	if r.TLS != nil {
		port = "443"
	}
	if _, p, err := net.SplitHostPort(r.Host); err == nil && p != "" && isDigits(p) {
		port = p
	}
	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	env := []string{
		"SERVER_SOFTWARE=switchyard-cgi/" + x.version,
		"SERVER_PROTOCOL=" + proto,
		"HTTP_HOST=" + r.Host,
		"GATEWAY_INTERFACE=CGI/1.1",
		"REQUEST_METHOD=" + r.Method,
		"QUERY_STRING=" + r.URL.RawQuery,
		"REQUEST_URI=" + r.URL.RequestURI(),
		"PATH_INFO=" + x.pathInfo,
		"SCRIPT_NAME=/" + x.name,
		"SCRIPT_FILENAME=" + x.script,
		"SERVER_PORT=" + port,
	}
	if ip, p, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		env = append(env, "REMOTE_ADDR="+ip, "REMOTE_HOST="+ip, "REMOTE_PORT="+p)
	} else {
		env = append(env, "REMOTE_ADDR="+r.RemoteAddr, "REMOTE_HOST="+r.RemoteAddr)
	}
	if host, _, err := net.SplitHostPort(r.Host); err == nil {
		env = append(env, "SERVER_NAME="+host)
	} else {
		env = append(env, "SERVER_NAME="+r.Host)
	}
	if r.TLS != nil {
		env = append(env, "HTTPS=on")
	}
	for k, vs := range r.Header {
		if strings.IndexByte(k, '_') >= 0 {
			// X_User would pass for X-User: both become HTTP_X_USER. As
			// nginx and Apache do, such fields are dropped.
			continue
		}
		k = strings.Map(upperCaseAndUnderscore, k)
		if k == "PROXY" {
			// httpoxy: HTTP_PROXY would pass for the proxy setting.
			continue
		}
		sep := ", "
		if k == "COOKIE" {
			sep = "; "
		}
		env = append(env, "HTTP_"+k+"="+strings.Join(vs, sep))
	}
	if r.ContentLength > 0 {
		env = append(env, "CONTENT_LENGTH="+strconv.FormatInt(r.ContentLength, 10))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		env = append(env, "CONTENT_TYPE="+ct)
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env = append(env, "PATH="+path)
	for _, k := range inheritEnv {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, x.conf.env...)
	return removeLeadingDuplicates(env)
}

// upperCaseAndUnderscore maps a header field name to a meta-variable name,
// as net/http/cgi does.
func upperCaseAndUnderscore(r rune) rune {
	switch {
	case r >= 'a' && r <= 'z':
		return r - ('a' - 'A')
	case r == '-', r == '=':
		return '_'
	}
	return r
}

// removeLeadingDuplicates keeps the last of the variables with one name.
func removeLeadingDuplicates(env []string) []string {
	last := make(map[string]int, len(env))
	for i, e := range env {
		name, _, _ := strings.Cut(e, "=")
		last[name] = i
	}
	out := env[:0]
	for i, e := range env {
		name, _, _ := strings.Cut(e, "=")
		if last[name] == i {
			out = append(out, e)
		}
	}
	return out
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

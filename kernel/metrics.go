package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-dev/switchyard/listeners/line"
	"github.com/switchyard-dev/switchyard/state"
)

// The kernel serves Prometheus metrics over HTTP at /metrics on
// [metrics] address. Counters and gauges are read from the kernel's own
// counters when scraped, through the functions `ctl status`, `plugins`,
// `listeners` and `timers` answer with, so the two always agree. The only
// state kept for metrics alone is the latency histograms, observed where a
// call is dispatched (route.Dispatch*, timerEntry.DispatchTick), and the
// store's write counters, kept by meteredStore. Each kernel has its own
// registry: several kernels can run in one process.

// metricsBuckets are the latency buckets, in seconds: a call into a plugin
// takes from a tenth of a millisecond up.
var metricsBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metricsShutdown bounds the wait for scrapes in progress when the metrics
// server stops.
const metricsShutdown = 5 * time.Second

// kernelMetrics is the kernel's metrics state.
type kernelMetrics struct {
	reg   *prometheus.Registry
	store storeCounters

	mu  sync.Mutex     // serialises changes of srv
	srv *metricsServer // nil: no metrics served; guarded by mu
}

// storeCounters count the store's successful writes.
type storeCounters struct {
	writes atomic.Uint64 // puts and deletes
	bytes  atomic.Uint64 // value bytes put
}

// meteredStore counts the writes to the store it wraps.
type meteredStore struct {
	state.Store
	c *storeCounters
}

func (s meteredStore) Put(ctx context.Context, key string, value []byte) error {
	err := s.Store.Put(ctx, key, value)
	if err == nil {
		s.c.writes.Add(1)
		s.c.bytes.Add(uint64(len(value)))
	}
	return err
}

func (s meteredStore) Delete(ctx context.Context, key string) error {
	err := s.Store.Delete(ctx, key)
	if err == nil {
		s.c.writes.Add(1)
	}
	return err
}

// meter returns st counting its writes into the kernel's metrics.
func (k *Kernel) meter(st state.Store) state.Store {
	return meteredStore{Store: st, c: &k.metrics.store}
}

// callKind is what a call into a plugin was, for the call latency
// histograms: its protocol and, for line sessions, the event.
type callKind int

const (
	callHTTP callKind = iota
	callDNS
	callLineOpen
	callLineLine
	callLineTooLong
	callLineBlock
	callLineClose
	callTick
	numCallKinds
)

// callLabels are each kind's protocol and kind labels.
var callLabels = [numCallKinds][2]string{
	callHTTP:        {"http", "request"},
	callDNS:         {"dns", "query"},
	callLineOpen:    {"line", "open"},
	callLineLine:    {"line", "line"},
	callLineTooLong: {"line", "too_long"},
	callLineBlock:   {"line", "block"},
	callLineClose:   {"line", "close"},
	callTick:        {"timer", "tick"},
}

// lineCall is the call kind of a line event.
func lineCall(k line.Kind) callKind {
	switch k {
	case line.Open:
		return callLineOpen
	case line.TooLong:
		return callLineTooLong
	case line.Block:
		return callLineBlock
	case line.Close:
		return callLineClose
	default:
		return callLineLine
	}
}

// isRequest reports whether the listener counts a call of kind as a
// request: a line listener counts lines, too-long lines and blocks, not a
// session's open and close.
func (c callKind) isRequest() bool { return c != callLineOpen && c != callLineClose }

// callLatency holds a slot's call latency histograms, one per kind, made
// when the first call of the kind is observed.
type callLatency [numCallKinds]atomic.Pointer[histogram]

type histogram struct{ h prometheus.Histogram }

func (c *callLatency) observe(plugin string, kind callKind, d time.Duration) {
	p := c[kind].Load()
	if p == nil {
		p = &histogram{prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "switchyard_plugin_call_duration_seconds",
			Help:        "Calls into a plugin, from the kernel's dispatch to the answer (waiting for an instance included).",
			ConstLabels: prometheus.Labels{"plugin": plugin, "protocol": callLabels[kind][0], "kind": callLabels[kind][1]},
			Buckets:     metricsBuckets,
		})}
		if !c[kind].CompareAndSwap(nil, p) {
			p = c[kind].Load()
		}
	}
	p.h.Observe(d.Seconds())
}

func (c *callLatency) collect(ch chan<- prometheus.Metric) {
	for i := range c {
		if p := c[i].Load(); p != nil {
			p.h.Collect(ch)
		}
	}
}

// newRequestLatency is the request latency histogram of a listener.
func newRequestLatency(name, protocol string) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "switchyard_listener_request_duration_seconds",
		Help:        "Requests a listener dispatched to its plugin, from dispatch to answer.",
		ConstLabels: prometheus.Labels{"listener": name, "protocol": protocol},
		Buckets:     metricsBuckets,
	})
}

// observe records a call of kind dispatched at t0 on route rt to slot s.
func (rt *route) observe(s *slot, kind callKind, t0 time.Time) {
	d := time.Since(t0)
	if rt.latency != nil && kind.isRequest() {
		rt.latency.Observe(d.Seconds())
	}
	s.latency.observe(s.name, kind, d)
}

// observe records a call of kind made at t0 to s.
func (s *slot) observe(kind callKind, t0 time.Time) { s.latency.observe(s.name, kind, time.Since(t0)) }

// newRegistry returns the kernel's registry: its own collector, the Go
// runtime's and the process's.
func (k *Kernel) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newKernelCollector(k),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// kernelCollector reads the kernel's counters at scrape time. It is an
// unchecked collector (Describe sends nothing): its series come and go with
// listeners, plugins and timers.
type kernelCollector struct {
	k *Kernel

	uptime, build *prometheus.Desc

	lConns, lAccepted, lRequests, lErrors, lRefused *prometheus.Desc

	pGeneration, pState, pInfo, pInflight, pDraining, pServed, pErrors,
	pRestarts, pSwaps, pSwapFailures, pRollbacks *prometheus.Desc

	tTicks, tSkipped, tErrors *prometheus.Desc

	sWrites, sBytes *prometheus.Desc
}

func newKernelCollector(k *Kernel) *kernelCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("switchyard_"+name, help, labels, nil)
	}
	listener := []string{"listener", "protocol"}
	return &kernelCollector{
		k:      k,
		uptime: d("uptime_seconds", "Seconds since the kernel started."),
		build:  d("build_info", "The kernel's version, as `switchyard version` prints it; always 1.", "version", "goversion"),

		lConns:    d("listener_connections", "Connections open now.", listener...),
		lAccepted: d("listener_connections_accepted_total", "Connections accepted.", listener...),
		lRequests: d("listener_requests_total", "Requests (HTTP and SCGI requests, DNS queries, line events) received.", listener...),
		lErrors:   d("listener_errors_total", "Requests that failed, and connections the listener refused.", listener...),
		lRefused:  d("listener_connections_refused_total", "Connections closed at once because max_connections were open.", listener...),

		pGeneration:   d("plugin_generation", "The plugin's generation: successful starts and swaps, from 1.", "plugin"),
		pState:        d("plugin_state", "1 for the state the plugin slot is in, 0 for the others.", "plugin", "state"),
		pInfo:         d("plugin_info", "The version the plugin's current instance reports; always 1.", "plugin", "version"),
		pInflight:     d("plugin_inflight", "Calls in flight, in every instance.", "plugin"),
		pDraining:     d("plugin_draining_instances", "Replaced instances still finishing their calls.", "plugin"),
		pServed:       d("plugin_served_total", "Calls the plugin answered.", "plugin"),
		pErrors:       d("plugin_errors_total", "Calls that failed.", "plugin"),
		pRestarts:     d("plugin_restarts_total", "Restarts after the plugin's process exited or broke.", "plugin"),
		pSwaps:        d("plugin_swaps_total", "Swaps to a new process: file changes, ctl reload, configuration reloads.", "plugin"),
		pSwapFailures: d("plugin_swap_failures_total", "Swaps that failed, leaving the running version serving.", "plugin"),
		pRollbacks:    d("plugin_rollbacks_total", "Swaps undone because the new version answered clearly worse.", "plugin"),

		tTicks:   d("timer_ticks_total", "Ticks delivered.", "timer"),
		tSkipped: d("timer_skipped_total", "Ticks skipped because the one before still ran.", "timer"),
		tErrors:  d("timer_errors_total", "Ticks that failed.", "timer"),

		sWrites: d("store_writes_total", "Successful writes (puts and deletes) to the shared store."),
		sBytes:  d("store_written_bytes_total", "Bytes of values put in the shared store."),
	}
}

// Describe sends nothing: the collector is unchecked.
func (c *kernelCollector) Describe(chan<- *prometheus.Desc) {}

// slotStates are the states a plugin slot can be in.
var slotStates = []string{stateStarting, stateServing, stateDraining, stateFailed, stateStopped}

func (c *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	k := c.k
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.uptime, time.Since(k.started).Seconds())
	gauge(c.build, 1, k.opts.Version, runtime.Version())

	for _, l := range k.Listeners() {
		gauge(c.lConns, float64(l.Connections), l.Name, l.Protocol)
		counter(c.lAccepted, float64(l.Accepted), l.Name, l.Protocol)
		counter(c.lRequests, float64(l.Requests), l.Name, l.Protocol)
		counter(c.lErrors, float64(l.Errors), l.Name, l.Protocol)
		counter(c.lRefused, float64(l.Refused), l.Name, l.Protocol)
	}
	for _, p := range k.Plugins() {
		gauge(c.pGeneration, float64(p.Generation), p.Name)
		for _, st := range slotStates {
			v := 0.0
			if p.State == st {
				v = 1
			}
			gauge(c.pState, v, p.Name, st)
		}
		if p.Version != "" {
			gauge(c.pInfo, 1, p.Name, p.Version)
		}
		gauge(c.pInflight, float64(p.Inflight), p.Name)
		gauge(c.pDraining, float64(len(p.Draining)), p.Name)
		counter(c.pServed, float64(p.Served), p.Name)
		counter(c.pErrors, float64(p.Errors), p.Name)
		counter(c.pRestarts, float64(p.Restarts), p.Name)
		counter(c.pSwaps, float64(p.Swaps), p.Name)
		counter(c.pSwapFailures, float64(p.SwapFailures), p.Name)
		counter(c.pRollbacks, float64(p.Rollbacks), p.Name)
	}
	for _, t := range k.Timers() {
		counter(c.tTicks, float64(t.Ticks), t.Name)
		counter(c.tSkipped, float64(t.Skipped), t.Name)
		counter(c.tErrors, float64(t.Errors), t.Name)
	}
	counter(c.sWrites, float64(k.metrics.store.writes.Load()))
	counter(c.sBytes, float64(k.metrics.store.bytes.Load()))

	k.mu.Lock()
	routes := make([]*route, 0, len(k.listeners))
	for _, l := range k.listeners {
		routes = append(routes, l.route)
	}
	slots := make([]*slot, 0, len(k.slots))
	for _, s := range k.slots {
		slots = append(slots, s)
	}
	k.mu.Unlock()
	for _, rt := range routes {
		if rt.latency != nil {
			rt.latency.Collect(ch)
		}
	}
	for _, s := range slots {
		s.latency.collect(ch)
	}
}

// metricsServer serves /metrics on one socket.
type metricsServer struct {
	addr string // as configured
	ln   net.Listener
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// MetricsAddress is the address the metrics server is bound to, or "" when
// the kernel serves no metrics.
func (k *Kernel) MetricsAddress() string {
	k.metrics.mu.Lock()
	defer k.metrics.mu.Unlock()
	if k.metrics.srv == nil {
		return ""
	}
	return k.metrics.srv.ln.Addr().String()
}

// listenMetrics binds addr for the metrics server, or takes the socket an
// upgrade handed over for it. It returns nil for addr "".
func (k *Kernel) listenMetrics(addr string, su *successor) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	if ln, err := su.metricsListener(addr); ln != nil || err != nil {
		return ln, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return ln, nil
}

// startMetrics serves metrics on ln (configured as addr) in place of the
// server running now, which it stops. ln nil stops serving metrics.
func (k *Kernel) startMetrics(addr string, ln net.Listener) {
	var next *metricsServer
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(k.metrics.reg, promhttp.HandlerOpts{
			ErrorLog:            promErrorLog{k.log},
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		}))
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "switchyard: metrics are at /metrics")
		})
		next = &metricsServer{addr: addr, ln: ln, done: make(chan struct{}), srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(k.log.With("component", "metrics").Handler(), slog.LevelDebug),
		}}
		go func() {
			defer close(next.done)
			if err := next.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				k.log.Error("metrics server stopped", "address", addr, "error", err)
			}
		}()
		k.log.Info("serving metrics", "address", ln.Addr().String(), "path", "/metrics")
	}
	k.metrics.mu.Lock()
	prev := k.metrics.srv
	k.metrics.srv = next
	k.metrics.mu.Unlock()
	prev.stop(k.forceCtx)
}

// stopMetrics stops the metrics server, if one runs.
func (k *Kernel) stopMetrics() { k.startMetrics("", nil) }

// stop shuts m down, letting scrapes in progress finish for a few seconds
// (less when ctx ends first). A nil m is stopped already.
func (m *metricsServer) stop(ctx context.Context) {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, metricsShutdown)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		m.srv.Close()
	}
	<-m.done
}

// metricsPlan is a configuration reload's change to the metrics server:
// prepared (the new address bound) before the reload commits.
type metricsPlan struct {
	k       *Kernel
	change  bool
	addr    string
	ln      net.Listener
	settled bool
}

// prepareMetrics binds addr if the metrics server must move there; an
// unchanged address keeps the server and its socket.
func (k *Kernel) prepareMetrics(addr string) (*metricsPlan, error) {
	k.metrics.mu.Lock()
	cur := ""
	if k.metrics.srv != nil {
		cur = k.metrics.srv.addr
	}
	k.metrics.mu.Unlock()
	p := &metricsPlan{k: k, addr: addr, change: addr != cur}
	if !p.change || addr == "" {
		return p, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	p.ln = ln
	return p, nil
}

// commit serves metrics as planned and says what changed ("" for nothing).
func (p *metricsPlan) commit() string {
	p.settled = true
	if !p.change {
		return ""
	}
	p.k.startMetrics(p.addr, p.ln)
	if p.ln == nil {
		return "stopped"
	}
	return "serving on " + p.ln.Addr().String()
}

// abort releases what a plan that did not commit bound.
func (p *metricsPlan) abort() {
	if !p.settled && p.ln != nil {
		p.ln.Close()
	}
	p.settled = true
}

// metricsFile returns a duplicate of the metrics server's socket for a
// new kernel, and the address it was configured with; nil when no metrics
// are served.
func (k *Kernel) metricsFile() (*os.File, string, error) {
	k.metrics.mu.Lock()
	defer k.metrics.mu.Unlock()
	m := k.metrics.srv
	if m == nil {
		return nil, "", nil
	}
	tl, ok := m.ln.(*net.TCPListener)
	if !ok {
		return nil, "", nil
	}
	f, err := tl.File()
	if err != nil {
		return nil, "", fmt.Errorf("metrics socket: %w", err)
	}
	return f, m.addr, nil
}

// metricsListener returns the metrics socket the old kernel handed over
// if it was configured with addr too, or nil.
func (su *successor) metricsListener(addr string) (net.Listener, error) {
	if su == nil || su.inv.Metrics == nil || su.inv.Metrics.Address != addr {
		return nil, nil
	}
	f := su.files[su.inv.Metrics.FD]
	delete(su.files, su.inv.Metrics.FD)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("metrics: inherited socket: %w", err)
	}
	return ln, nil
}

// inheritedMetrics is the metrics server's socket, handed over in an
// upgrade.
type inheritedMetrics struct {
	Address string `json:"address"` // as configured
	FD      int    `json:"fd"`
}

// promErrorLog logs the errors promhttp reports.
type promErrorLog struct{ log *slog.Logger }

func (l promErrorLog) Println(v ...any) { l.log.Warn("metrics: " + fmt.Sprint(v...)) }

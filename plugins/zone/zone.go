package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/miekg/dns"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

const (
	// debounce is how long the zone file must stay quiet after a change
	// before it is parsed again.
	debounce = 200 * time.Millisecond
	// ednsSize is the UDP payload size the answers advertise.
	ednsSize = 4096
)

// settings are zone's [plugins.NAME.settings].
type settings struct {
	// File is the zone file's path. A relative path is taken from the
	// plugin's working directory, which the kernel sets to "/".
	File string `json:"file"`
	// Origin, when set, is the default $ORIGIN of the file, and the SOA
	// must be at it.
	Origin string `json:"origin"`
}

// zonePlugin answers DNS queries from the zone it holds. It is safe for
// concurrent use: lookups read an immutable zone through an atomic pointer,
// which Configure and the file watcher replace.
type zonePlugin struct {
	version string
	zone    atomic.Pointer[zone] // nil until the first Configure

	mu    sync.Mutex // serialises Configure and close
	watch *watcher   // the running watcher, or nil; guarded by mu
}

// newZonePlugin returns the plugin's state; newPlugin wraps it for sdk.Serve.
func newZonePlugin(version string) *zonePlugin {
	return &zonePlugin{version: version}
}

func newPlugin(version string) sdk.Plugin {
	return newZonePlugin(version).plugin()
}

func (p *zonePlugin) plugin() sdk.Plugin {
	return sdk.Plugin{
		Name:      "zone",
		Version:   p.version,
		DNS:       p,
		Configure: p.configure,
	}
}

// configure loads the zone file of the settings and starts watching it.
// A file that does not load is refused and changes nothing: the zone and
// the watcher of the previous settings carry on.
func (p *zonePlugin) configure(_ context.Context, c sdk.Config) error {
	var s settings
	if err := c.Decode(&s); err != nil {
		return err
	}
	if s.File == "" {
		return errors.New("settings: file is required")
	}
	path, err := filepath.Abs(s.File)
	if err != nil {
		return fmt.Errorf("settings: file: %w", err)
	}
	z, err := loadZone(path, s.Origin)
	if err != nil {
		return err
	}
	log := c.Host.Logger()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watch.stop()
	p.watch = nil
	p.zone.Store(z)
	log.Info("zone loaded", "file", path, "zone", z.describe())
	w, err := startWatcher(path, s.Origin, log, &p.zone)
	if err != nil {
		// The zone serves; only its reloads are lost.
		log.Warn("zone file not watched: edits need a reload", "file", path, "error", err)
		return nil
	}
	p.watch = w
	return nil
}

// close stops the file watcher and waits for it. The plugin still answers
// from the zone it holds.
func (p *zonePlugin) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watch.stop()
	p.watch = nil
}

// ServeDNS answers one query from the current zone.
func (p *zonePlugin) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_ = w.WriteMsg(p.answer(req))
}

// answer builds the reply to req.
func (p *zonePlugin) answer(req *dns.Msg) *dns.Msg {
	m := &dns.Msg{}
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.Question = append([]dns.Question(nil), req.Question...)
	m.Compress = true
	opt := req.IsEdns0()
	if opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	case opt != nil && opt.Version() != 0:
		m.Rcode = dns.RcodeBadVers
		return m
	}
	q := req.Question[0]
	z := p.zone.Load()
	switch {
	case z == nil:
		m.Rcode = dns.RcodeServerFailure
		return m
	case q.Qclass != dns.ClassINET:
		m.Rcode = dns.RcodeRefused
		return m
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		// Zone transfers are not offered.
		m.Rcode = dns.RcodeRefused
		return m
	}
	r := z.lookup(q.Name, q.Qtype)
	m.Rcode = r.rcode
	m.Authoritative = r.authoritative
	m.Answer = r.answer
	m.Ns = r.ns
	m.Extra = append(r.extra, m.Extra...) // the OPT record goes last
	return m
}

// watcher reloads a zone file when it changes. Its goroutine runs until
// stop.
type watcher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startWatcher watches the directory of path (a watch on the file itself
// is lost when an editor renames a new file over it) and, once the file has
// been quiet for the debounce time after a change, parses it again and
// stores the new zone in dst. A file that does not parse is logged and the
// old zone keeps serving.
func startWatcher(path, origin string, log *slog.Logger, dst *atomic.Pointer[zone]) (*watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := fw.Add(filepath.Dir(path)); err != nil {
		_ = fw.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer func() { _ = fw.Close() }()
		defer func() {
			if r := recover(); r != nil {
				log.Error("zone watcher panicked; edits need a reload", "file", path, "panic", fmt.Sprint(r))
			}
		}()
		watchLoop(ctx, fw, path, origin, log, dst)
	}()
	return w, nil
}

func watchLoop(ctx context.Context, fw *fsnotify.Watcher, path, origin string, log *slog.Logger, dst *atomic.Pointer[zone]) {
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fw.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == path && !ev.Has(fsnotify.Chmod) {
				timer.Reset(debounce)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return
			}
			log.Warn("zone watcher", "file", path, "error", err)
			// An overflow may have hidden a change.
			timer.Reset(debounce)
		case <-timer.C:
			reload(path, origin, log, dst)
		}
	}
}

// reload parses path again and stores the zone in dst if it parses and
// differs from the one serving.
func reload(path, origin string, log *slog.Logger, dst *atomic.Pointer[zone]) {
	old := dst.Load()
	z, err := loadZone(path, origin)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// Removed, or between an editor's remove and create: wait
			// for the next event.
			log.Warn("zone file missing; the old zone keeps serving", "file", path)
			return
		}
		log.Error("zone file not reloaded; the old zone keeps serving", "file", path, "error", err)
		return
	}
	if old != nil && bytes.Equal(old.sum[:], z.sum[:]) {
		return
	}
	dst.Store(z)
	log.Info("zone reloaded", "file", path, "zone", z.describe())
}

// stop ends the watcher and waits for its goroutine. A nil watcher is
// stopped already.
func (w *watcher) stop() {
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
}

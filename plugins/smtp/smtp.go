package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

const (
	// defaultHostname is the hostname setting's default.
	defaultHostname = "localhost"
	// defaultMaxSize is max_size when the settings leave it out.
	defaultMaxSize = 10 << 20
	// storeMaxValue is the largest value the kernel's store keeps
	// (state.MaxValue).
	storeMaxValue = 16 << 20
	// headerRoom is what the trace headers smtp prepends may add to a
	// message: max_size may be at most storeMaxValue-headerRoom, so that
	// every message it accepts can be stored.
	headerRoom = 64 << 10
	// maxMaxSize is the largest max_size.
	maxMaxSize = storeMaxValue - headerRoom
	// defaultMaxRecipients is max_recipients when the settings leave it
	// out; RFC 5321 section 4.5.3.1.8 asks a server to take at least 100.
	defaultMaxRecipients = 100
	// maxMaxRecipients bounds max_recipients: the recipients live in the
	// session state, which travels with every swap.
	maxMaxRecipients = 1000
	// maxErrors is how many bad commands a session may send before smtp
	// ends it with 421.
	maxErrors = 20

	// failReply is what the kernel answers a client when smtp cannot
	// answer (it crashed, timed out or is restarting).
	failReply = "451 4.3.0 Temporary failure, please try again"

	// Store keys, in the plugin's part of the shared store: message ID is
	// kept under messages/ID, its envelope as JSON under envelopes/ID.
	messagePrefix  = "messages/"
	envelopePrefix = "envelopes/"
)

// settings are smtp's [plugins.NAME.settings].
type settings struct {
	// Hostname names the server in the greeting, replies and the Received
	// header.
	Hostname string `json:"hostname"`
	// MaxSize is the largest message accepted, in bytes, as received
	// (after dot-unstuffing, without the trace headers smtp adds).
	MaxSize int64 `json:"max_size"`
	// MaxRecipients is the most RCPT TO one transaction may have.
	MaxRecipients int `json:"max_recipients"`
}

// config is the validated settings. It is never changed once made.
type config struct {
	hostname      string
	maxSize       int64
	maxRecipients int
}

// server holds what the SMTP sessions of one process share: the settings
// and the id source. Nothing of a session lives here; see session.go. It
// is safe for concurrent use.
type server struct {
	version string
	cfg     atomic.Pointer[config]
	ids     idSource
	now     func() time.Time // time.Now; fixed in tests
}

func newServer(version string) *server {
	s := &server{version: version, now: time.Now}
	s.cfg.Store(&config{hostname: defaultHostname, maxSize: defaultMaxSize, maxRecipients: defaultMaxRecipients})
	return s
}

func newPlugin(version string) sdk.Plugin { return newServer(version).plugin() }

// plugin returns the sdk.Plugin that serves with s.
func (s *server) plugin() sdk.Plugin {
	return sdk.Plugin{
		Name:          "smtp",
		Version:       s.version,
		Line:          handler{s},
		LineFailReply: failReply,
		Configure:     s.configure,
	}
}

func (s *server) config() *config { return s.cfg.Load() }

func (s *server) configure(_ context.Context, c sdk.Config) error {
	st := settings{Hostname: defaultHostname, MaxSize: defaultMaxSize, MaxRecipients: defaultMaxRecipients}
	if err := c.Decode(&st); err != nil {
		return err
	}
	cfg, err := st.validate()
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	s.cfg.Store(cfg)
	return nil
}

func (st settings) validate() (*config, error) {
	if !validHostname(st.Hostname) {
		return nil, fmt.Errorf("hostname %q must be 1 to 255 letters, digits and . - _ (or an address literal in [ ])", st.Hostname)
	}
	if st.MaxSize <= 0 || st.MaxSize > maxMaxSize {
		return nil, fmt.Errorf("max_size %d must be from 1 to %d bytes (the store's 16 MiB limit less %d bytes for headers)", st.MaxSize, maxMaxSize, headerRoom)
	}
	if st.MaxRecipients <= 0 || st.MaxRecipients > maxMaxRecipients {
		return nil, fmt.Errorf("max_recipients %d must be from 1 to %d", st.MaxRecipients, maxMaxRecipients)
	}
	return &config{hostname: st.Hostname, maxSize: st.MaxSize, maxRecipients: st.MaxRecipients}, nil
}

// validHostname reports whether h may name the server: it goes into
// replies and headers as it is.
func validHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == '_', c == '[', c == ']', c == ':':
		default:
			return false
		}
	}
	return true
}

// Ids are the SDK's (sdk.IDs): time-ordered, and distinct across the old
// and new version of the plugin during a swap.
const idLen = sdk.IDLen

// idSource makes ids. The zero value is ready and safe for concurrent use.
type idSource struct{ sdk.IDs }

func (s *idSource) next(now time.Time) string { return s.IDs.Next(now) }

func validID(id string) bool { return sdk.ValidID(id) }

package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

func TestPanics(t *testing.T) {
	testutil.CheckGoroutines(t)
	log := &testutil.LogRecorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("/before", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Partial", "yes")
		_, _ = io.WriteString(w, "partial answer, never sent")
		panic("boom before")
	})
	mux.HandleFunc("/after", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "head and some body\n")
		w.(http.Flusher).Flush()
		panic("boom after")
	})
	mux.HandleFunc("/abort-before", func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/abort-after", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "head and some body\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	p := start(t, mux, sdktest.Options{Log: log})

	tests := []struct {
		path     string
		code     int    // the status the client gets
		body     string // a prefix of the body the client reads
		readErr  bool   // the body read fails instead of ending cleanly
		logged   string // the panic value in the kernel's log, "" for none
		noHeader string // a header the handler set that must not arrive
	}{
		{path: "/before", code: 500, body: "Internal Server Error\n", logged: "boom before", noHeader: "X-Partial"},
		{path: "/after", code: 200, body: "head and some body\n", readErr: true, logged: "boom after"},
		{path: "/abort-before", code: 502, body: ""},
		{path: "/abort-after", code: 200, body: "head and some body\n", readErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			before := len(log.Find("handler panicked"))
			res, b, err := do(t, p, newRequest(t, "GET", "http://example.test"+tt.path, nil))
			if res.StatusCode != tt.code {
				t.Errorf("status %d, want %d (body %q)", res.StatusCode, tt.code, b)
			}
			if !strings.HasPrefix(string(b), tt.body) {
				t.Errorf("body %q, want it to start with %q", b, tt.body)
			}
			if tt.readErr && err == nil {
				t.Error("body ended cleanly; a response cut off must fail the read")
			}
			if !tt.readErr && err != nil {
				t.Errorf("body read: %v", err)
			}
			if tt.noHeader != "" && res.Header.Get(tt.noHeader) != "" {
				t.Errorf("header %s of the abandoned answer arrived", tt.noHeader)
			}
			// The plugin keeps serving.
			if code, body := p.Get("/ok"); code != 200 || body != "ok" {
				t.Errorf("after the panic: %d %q", code, body)
			}
			recs := log.Find("handler panicked")
			if tt.logged == "" {
				if len(recs) != before {
					t.Errorf("http.ErrAbortHandler was logged: %+v", recs[before:])
				}
				return
			}
			if len(recs) != before+1 {
				t.Fatalf("%d panic records, want %d", len(recs), before+1)
			}
			r := recs[before]
			if r.Level != slog.LevelError || r.Attrs["panic"] != tt.logged ||
				r.Attrs["handler"] != "http GET "+tt.path || !strings.Contains(r.Attrs["stack"], "plugin_test.go") ||
				r.Attrs["plugin"] != "test" {
				t.Errorf("panic record %+v", r)
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	testutil.CheckGoroutines(t)
	type settings struct {
		Greeting string `json:"greeting"`
		Limit    int    `json:"limit"`
	}
	var (
		mu  sync.Mutex
		got sdk.Config
		dec settings
	)
	plugin := func(configure func(context.Context, sdk.Config) error) sdk.Plugin {
		return sdk.Plugin{Name: "conf", Version: "v1", HTTP: http.NotFoundHandler(), Configure: configure}
	}
	decode := func(_ context.Context, c sdk.Config) error {
		mu.Lock()
		defer mu.Unlock()
		got = c
		dec = settings{}
		return c.Decode(&dec)
	}
	tests := []struct {
		name      string
		configure func(context.Context, sdk.Config) error
		settings  any
		opts      sdktest.Options
		wantErr   string // a substring of Start's error, "" for success
		check     func(t *testing.T)
	}{
		{
			name: "settings arrive", configure: decode,
			settings: map[string]any{"greeting": "bonjour", "limit": 3},
			opts:     sdktest.Options{Slot: "greeter", Listener: "front"},
			check: func(t *testing.T) {
				mu.Lock()
				defer mu.Unlock()
				if dec != (settings{"bonjour", 3}) {
					t.Errorf("decoded %+v", dec)
				}
				if got.Slot != "greeter" || got.Generation != 1 {
					t.Errorf("slot %q generation %d", got.Slot, got.Generation)
				}
				want := []sdk.Listener{{Name: "front", Protocol: "http", Address: "sdktest"}}
				if !reflect.DeepEqual(got.Listeners, want) {
					t.Errorf("listeners %+v", got.Listeners)
				}
				if got.Host == nil || got.Host.Slot() != "greeter" || got.Host.Generation() != 1 {
					t.Errorf("host %+v", got.Host)
				}
				var m map[string]any
				if err := json.Unmarshal(got.Settings, &m); err != nil || m["greeting"] != "bonjour" {
					t.Errorf("raw settings %s: %v", got.Settings, err)
				}
			},
		},
		{
			name: "no settings decode as an empty object", configure: decode,
			check: func(t *testing.T) {
				mu.Lock()
				defer mu.Unlock()
				if string(got.Settings) != "{}" || dec != (settings{}) {
					t.Errorf("settings %s decoded %+v", got.Settings, dec)
				}
			},
		},
		{
			name: "unknown key", configure: decode,
			settings: map[string]any{"greeting": "hi", "greting": "typo"},
			wantErr:  `unknown field "greting"`,
		},
		{
			name: "wrong type", configure: decode,
			settings: map[string]any{"limit": "three"},
			wantErr:  "settings: json: cannot unmarshal",
		},
		{
			name:      "refused",
			configure: func(context.Context, sdk.Config) error { return errors.New("greeting is empty") },
			wantErr:   "greeting is empty",
		},
		{
			name:      "panic",
			configure: func(context.Context, sdk.Config) error { panic("bad config code") },
			wantErr:   "configure panicked: bad config code",
		},
		{
			name: "deadline crosses",
			configure: func(ctx context.Context, _ sdk.Config) error {
				if _, ok := ctx.Deadline(); !ok {
					return errors.New("no deadline")
				}
				return nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sdktest.Start(t, plugin(tt.configure), tt.settings, tt.opts)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Start: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Start succeeded, want an error with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Start: %v, want an error with %q", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	type s struct {
		A string `json:"a"`
	}
	tests := []struct {
		name     string
		settings string
		want     s
		wantErr  bool
	}{
		{"empty", "", s{}, false},
		{"object", `{"a":"x"}`, s{"x"}, false},
		{"unknown", `{"a":"x","b":1}`, s{}, true},
		{"not an object", `[1]`, s{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v s
			err := sdk.Config{Settings: json.RawMessage(tt.settings)}.Decode(&v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Decode: %v", err)
			}
			if err == nil && v != tt.want {
				t.Errorf("got %+v", v)
			}
		})
	}
}

func TestHostLog(t *testing.T) {
	testutil.CheckGoroutines(t)
	log := &testutil.LogRecorder{}
	plugin := sdk.Plugin{
		Name: "logger", Version: "v1",
		Configure: func(_ context.Context, c sdk.Config) error {
			c.Host.Logger().Info("configured", "setting", "x", slog.Group("g", slog.Int("n", 1)))
			c.Host.Logger().Debug("debug record")
			return nil
		},
		HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			l := sdk.HostFrom(r.Context()).Logger().With("request", r.URL.Path).WithGroup("req")
			l.Warn("handling", "method", r.Method)
		}),
	}
	p, err := sdktest.Start(t, plugin, nil, sdktest.Options{Slot: "slotname", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := p.Get("/path"); code != 200 {
		t.Fatalf("status %d", code)
	}
	tests := []struct {
		msg   string
		level slog.Level
		attrs map[string]string
	}{
		{"configured", slog.LevelInfo, map[string]string{"plugin": "slotname", "setting": "x", "g.n": "1"}},
		{"debug record", slog.LevelDebug, map[string]string{"plugin": "slotname"}},
		{"handling", slog.LevelWarn, map[string]string{"plugin": "slotname", "request": "/path", "req.method": "GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			recs := log.Find(tt.msg)
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			if recs[0].Level != tt.level || !reflect.DeepEqual(recs[0].Attrs, tt.attrs) {
				t.Errorf("got %+v, want level %v attrs %v", recs[0], tt.level, tt.attrs)
			}
		})
	}
	t.Run("outside a call", func(t *testing.T) {
		if h := sdk.HostFrom(context.Background()); h == nil || h.Logger() == nil {
			t.Error("HostFrom outside a call returned no usable Host")
		}
	})
}

func TestDescribe(t *testing.T) {
	testutil.CheckGoroutines(t)
	p := sdktest.New(t, sdk.Plugin{Name: "desc", Version: "v9", HTTP: http.NotFoundHandler()}, nil)
	d := p.Describe
	if d.GetName() != "desc" || d.GetVersion() != "v9" || !reflect.DeepEqual(d.GetProtocols(), []string{"http"}) || d.GetSdkProtocol() != sdk.SDKProtocol {
		t.Errorf("Describe = %v", d)
	}
}

// TestConcurrent sends many requests at once, of many sizes, over one and
// over four streams.
func TestConcurrent(t *testing.T) {
	testutil.CheckGoroutines(t)
	for _, streams := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d streams", streams), func(t *testing.T) {
			p := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), 400)
					return
				}
				w.Header().Set("X-Sum", sum(b))
				w.Header().Set("X-Id", r.URL.Query().Get("id"))
				_, _ = w.Write(b)
				_, _ = w.Write(b)
			}), sdktest.Options{Streams: streams})
			sizes := []int{0, 1, 100, 4 << 10, 40 << 10, 64 << 10, 64<<10 + 1, 300 << 10}
			const workers, perWorker = 16, 20
			var wg sync.WaitGroup
			errs := make(chan error, workers*perWorker)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWorker {
						size := sizes[(w+i)%len(sizes)]
						body := pattern(size)
						id := fmt.Sprintf("%d-%d", w, i)
						req, _ := http.NewRequest("POST", "http://example.test/?id="+id, bytes.NewReader(body))
						res, err := p.Client().Do(req)
						if err != nil {
							errs <- err
							continue
						}
						got, err := io.ReadAll(res.Body)
						res.Body.Close()
						switch {
						case err != nil:
							errs <- fmt.Errorf("%s: %w", id, err)
						case res.Header.Get("X-Id") != id || res.Header.Get("X-Sum") != sum(body):
							errs <- fmt.Errorf("%s: answer for %s, sum %s", id, res.Header.Get("X-Id"), res.Header.Get("X-Sum"))
						case !bytes.Equal(got, append(append([]byte(nil), body...), body...)):
							errs <- fmt.Errorf("%s: body of %d bytes, want %d", id, len(got), 2*size)
						}
					}
				}()
			}
			done := make(chan struct{})
			go func() {
				wg.Wait()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("requests did not finish")
			}
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/testutil"
	"github.com/switchyard-dev/switchyard/plugins/sdk/sdktest"
)

// do sends one request to p and returns the response with its body read.
func do(t *testing.T, p *sdktest.Plugin, method, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://inbox.test"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return res, b
}

// post stores body and returns the new message's id, failing the test
// unless the answer is a proper 201.
func post(t *testing.T, p *sdktest.Plugin, body []byte) string {
	t.Helper()
	res, b := do(t, p, "POST", "/message", bytes.NewReader(body))
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /message: %d %q", res.StatusCode, b)
	}
	id := strings.TrimSuffix(string(b), "\n")
	if !validID(id) || string(b) != id+"\n" {
		t.Fatalf("POST /message: body %q is not an id and a newline", b)
	}
	if loc := res.Header.Get("Location"); loc != "/message/"+id {
		t.Errorf("Location %q, want /message/%s", loc, id)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	return id
}

func list(t *testing.T, p *sdktest.Plugin) []listEntry {
	t.Helper()
	res, b := do(t, p, "GET", "/messages", nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /messages: %d %s %q", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	var es []listEntry
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatalf("GET /messages: %v in %q", err, b)
	}
	return es
}

func TestDescribe(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	if d := p.Describe; d.GetName() != "inbox" || d.GetVersion() != "v1" || !slices.Equal(d.GetProtocols(), []string{"http"}) {
		t.Errorf("Describe = %v", d)
	}
}

func TestRoundTrip(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	if es := list(t, p); len(es) != 0 {
		t.Fatalf("empty inbox lists %v", es)
	}
	if _, b := do(t, p, "GET", "/messages", nil); string(b) != "[]\n" {
		t.Errorf("empty list %q, want []", b)
	}
	bodies := [][]byte{[]byte("hello, inbox"), {0, 1, 2, 0xff}, []byte("third\n")}
	var ids []string
	for _, body := range bodies {
		ids = append(ids, post(t, p, body))
	}
	for i, id := range ids {
		res, b := do(t, p, "GET", "/message/"+id, nil)
		if res.StatusCode != http.StatusOK || !bytes.Equal(b, bodies[i]) {
			t.Errorf("GET /message/%s: %d %q, want %q", id, res.StatusCode, b, bodies[i])
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type %q", ct)
		}
		if res.ContentLength != int64(len(bodies[i])) {
			t.Errorf("Content-Length %d, want %d", res.ContentLength, len(bodies[i]))
		}
		v, err := p.Store().Get(context.Background(), "messages/"+id)
		if err != nil || !bytes.Equal(v, bodies[i]) {
			t.Errorf("store has %q, %v", v, err)
		}
	}
	want := []listEntry{{ids[0], int64(len(bodies[0]))}, {ids[1], int64(len(bodies[1]))}, {ids[2], int64(len(bodies[2]))}}
	if got := list(t, p); !slices.Equal(got, want) {
		t.Errorf("list %v, want %v", got, want)
	}
	t.Run("HEAD", func(t *testing.T) {
		res, b := do(t, p, "HEAD", "/message/"+ids[0], nil)
		if res.StatusCode != http.StatusOK || len(b) != 0 || res.ContentLength != int64(len(bodies[0])) {
			t.Errorf("HEAD /message/ID: %d, %d bytes, Content-Length %d", res.StatusCode, len(b), res.ContentLength)
		}
		res, _ = do(t, p, "HEAD", "/messages", nil)
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("HEAD /messages: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
		}
	})
}

func TestLargeMessage(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	for _, n := range []int{1 << 20, 3<<20 + 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			body := make([]byte, n)
			_, _ = rand.Read(body)
			id := post(t, p, body)
			res, b := do(t, p, "GET", "/message/"+id, nil)
			if res.StatusCode != http.StatusOK || !bytes.Equal(b, body) {
				t.Errorf("GET: %d, %d bytes back, want %d", res.StatusCode, len(b), n)
			}
		})
	}
}

func TestBadBodies(t *testing.T) {
	const limit = 1024
	p := sdktest.New(t, newPlugin("v1"), map[string]any{"max_message": limit})
	tests := []struct {
		name string
		body io.Reader
		code int
		msg  string
	}{
		{"no body", nil, http.StatusBadRequest, "inbox: the message is empty\n"},
		{"empty body", strings.NewReader(""), http.StatusBadRequest, "inbox: the message is empty\n"},
		{"empty chunked body", io.MultiReader(), http.StatusBadRequest, "inbox: the message is empty\n"},
		{"over the limit", bytes.NewReader(make([]byte, limit+1)), http.StatusRequestEntityTooLarge, "inbox: the message is larger than 1024 bytes\n"},
		{"over the limit, chunked", io.MultiReader(bytes.NewReader(make([]byte, 4*limit))), http.StatusRequestEntityTooLarge, "inbox: the message is larger than 1024 bytes\n"},
		{"far over the limit", bytes.NewReader(make([]byte, 9<<20)), http.StatusRequestEntityTooLarge, "inbox: the message is larger than 1024 bytes\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b := do(t, p, "POST", "/message", tt.body)
			if res.StatusCode != tt.code || string(b) != tt.msg {
				t.Errorf("%d %q, want %d %q", res.StatusCode, b, tt.code, tt.msg)
			}
			if res.Header.Get("Location") != "" {
				t.Errorf("Location %q on a failure", res.Header.Get("Location"))
			}
		})
	}
	if es, _ := p.Store().List(context.Background(), ""); len(es) != 0 {
		t.Errorf("refused messages were stored: %v", es)
	}
	post(t, p, make([]byte, limit)) // exactly the limit is fine
}

func TestNotAllowed(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	id := post(t, p, []byte("x"))
	tests := []struct{ name, method, path string }{
		{"delete a message", "DELETE", "/message/" + id},
		{"put a message", "PUT", "/message/" + id},
		{"post to a message", "POST", "/message/" + id},
		{"root", "GET", "/"},
		{"put /message", "PUT", "/message"},
		{"get /message", "GET", "/message"},
		{"post /messages", "POST", "/messages"},
		{"delete /messages", "DELETE", "/messages"},
		{"options", "OPTIONS", "/message"},
		{"dot-dot", "GET", "/message/../x"},
		{"dot-dot to the list", "GET", "/message/../messages"},
		{"trailing slash", "GET", "/messages/"},
		{"double slash", "POST", "//message"},
		{"case", "POST", "/Message"},
		{"prefix", "GET", "/messagesx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, b := do(t, p, tt.method, tt.path, strings.NewReader("body"))
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s: %d %q, want 404", tt.method, tt.path, res.StatusCode, b)
			}
		})
	}
	if es := list(t, p); len(es) != 1 || es[0].ID != id {
		t.Errorf("list %v, want only %s", es, id)
	}
}

func TestMalformedID(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	id := post(t, p, []byte("x"))
	// A key outside the id shape that the store does hold.
	if err := p.Store().Put(context.Background(), "messages/abc", []byte("hidden")); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"empty":                "/message/",
		"short":                "/message/" + id[:idLen-1],
		"long":                 "/message/" + id + "0",
		"upper case":           "/message/" + strings.ToUpper(id),
		"not hex":              "/message/" + id[:idLen-1] + "g",
		"stored non-id":        "/message/abc",
		"sub-path":             "/message/" + id + "/x",
		"unknown, well-formed": "/message/" + strings.Repeat("0", idLen),
	} {
		t.Run(name, func(t *testing.T) {
			if res, b := do(t, p, "GET", path, nil); res.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %d %q, want 404", path, res.StatusCode, b)
			}
		})
	}
	if es := list(t, p); len(es) != 1 || es[0].ID != id {
		t.Errorf("list %v, want only %s (not the key outside the id shape)", es, id)
	}
}

func TestConcurrentPosts(t *testing.T) {
	p := sdktest.New(t, newPlugin("v1"), nil)
	const workers, each = 8, 50
	var (
		mu  sync.Mutex
		ids = make(map[string]string) // id → body
		wg  sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				body := fmt.Sprintf("worker %d message %d", w, i)
				req, _ := http.NewRequest("POST", "http://inbox.test/message", strings.NewReader(body))
				res, err := p.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusCreated {
					t.Errorf("POST: %d %q %v", res.StatusCode, b, err)
					return
				}
				id := strings.TrimSuffix(string(b), "\n")
				mu.Lock()
				if prev, dup := ids[id]; dup {
					t.Errorf("id %s given to %q and %q", id, prev, body)
				}
				ids[id] = body
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(ids) != workers*each {
		t.Fatalf("%d distinct ids, want %d", len(ids), workers*each)
	}
	es := list(t, p)
	if len(es) != len(ids) {
		t.Errorf("list has %d messages, want %d", len(es), len(ids))
	}
	for i, e := range es {
		if i > 0 && es[i-1].ID >= e.ID {
			t.Errorf("list out of order at %d: %s then %s", i, es[i-1].ID, e.ID)
		}
		if body, ok := ids[e.ID]; !ok || int64(len(body)) != e.Size {
			t.Errorf("listed %+v, posted %q", e, body)
		}
	}
	for id, body := range ids {
		v, err := p.Store().Get(context.Background(), "messages/"+id)
		if err != nil || string(v) != body {
			t.Errorf("store has %q, %v for %s, want %q", v, err, id, body)
		}
	}
}

func TestIDs(t *testing.T) {
	var a, b idSource
	prev := ""
	seen := make(map[string]bool)
	for range 10000 {
		id := a.next()
		if !validID(id) || id <= prev || seen[id] {
			t.Fatalf("id %q after %q", id, prev)
		}
		seen[id] = true
		prev = id
	}
	// Another process's ids: same clock, other random digits.
	for range 1000 {
		if id := b.next(); seen[id] {
			t.Fatalf("two sources made %s", id)
		}
	}
}

func TestBadSettings(t *testing.T) {
	for name, settings := range map[string]any{
		"unknown key":    map[string]any{"max_mesage": 10},
		"zero":           map[string]any{"max_message": 0},
		"negative":       map[string]any{"max_message": -1},
		"over the store": map[string]any{"max_message": storeMaxValue + 1},
		"wrong type":     map[string]any{"max_message": "1MiB"},
		"fraction":       map[string]any{"max_message": 1.5},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := sdktest.Start(t, newPlugin("v1"), settings, sdktest.Options{}); err == nil {
				t.Fatal("Configure accepted bad settings")
			}
		})
	}
}

// failingStore is a store whose every call fails, as a broken disk would.
type failingStore struct{ *sdktest.Store }

var errDisk = errors.New("disk on fire")

func (failingStore) Put(context.Context, string, []byte) error { return errDisk }

func TestStoreFails(t *testing.T) {
	log := &testutil.LogRecorder{}
	store := failingStore{sdktest.NewStore()}
	p, err := sdktest.Start(t, newPlugin("v1"), nil, sdktest.Options{Store: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	res, b := do(t, p, "POST", "/message", strings.NewReader("precious"))
	if res.StatusCode != http.StatusInternalServerError {
		t.Errorf("POST with a failing store: %d %q, want 500", res.StatusCode, b)
	}
	if res.Header.Get("Location") != "" || validID(strings.TrimSpace(string(b))) {
		t.Errorf("a failed POST claims an id: Location %q, body %q", res.Header.Get("Location"), b)
	}
	if es, _ := store.List(context.Background(), ""); len(es) != 0 {
		t.Errorf("store holds %v", es)
	}
	recs := log.Find("")
	if !slices.ContainsFunc(recs, func(r testutil.Record) bool {
		return strings.HasPrefix(r.Message, "inbox: storing message ") && strings.Contains(r.Attrs["error"], errDisk.Error())
	}) {
		t.Errorf("the failure is not logged: %+v", recs)
	}
}

// TestNoKernel: outside the kernel (a plugin run standalone) there is no
// store, and inbox says so with 503.
func TestNoKernel(t *testing.T) {
	in := &inbox{}
	in.maxMessage.Store(defaultMaxMessage)
	for _, tt := range []struct{ method, path string }{{"POST", "/message"}, {"GET", "/messages"}, {"GET", "/message/" + strings.Repeat("a", idLen)}} {
		w := httptest.NewRecorder()
		in.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, strings.NewReader("x")))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Location") != "" {
			t.Errorf("%s %s: %d %q, want 503", tt.method, tt.path, w.Code, w.Body)
		}
	}
}

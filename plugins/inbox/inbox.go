package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/plugins/sdk"
)

const (
	// defaultMaxMessage is max_message when the settings leave it out.
	defaultMaxMessage = 8 << 20
	// storeMaxValue is the largest value the kernel's store keeps
	// (state.MaxValue); a larger max_message could never be stored.
	storeMaxValue = 16 << 20
	// keyPrefix is where messages live in the plugin's part of the store:
	// message ID is the key messages/ID.
	keyPrefix = "messages/"
)

// settings are inbox's [plugins.NAME.settings].
type settings struct {
	// MaxMessage is the largest message body accepted, in bytes.
	MaxMessage int64 `json:"max_message"`
}

// action is one callable request: a method and a path. The path
// "/message/" stands for every /message/ID.
type action struct {
	method, path string
}

// handlerFunc answers one action.
type handlerFunc func(*inbox, http.ResponseWriter, *http.Request)

// actions is the allowlist: the only requests inbox answers other than with
// 404. It is never modified.
var actions = map[action]handlerFunc{
	{http.MethodPost, "/message"}:  (*inbox).post,
	{http.MethodGet, "/messages"}:  (*inbox).list,
	{http.MethodHead, "/messages"}: (*inbox).list,
	{http.MethodGet, "/message/"}:  (*inbox).get,
	{http.MethodHead, "/message/"}: (*inbox).get,
}

// route names the action r asks for.
func route(r *http.Request) action {
	p := r.URL.Path
	if strings.HasPrefix(p, "/message/") {
		p = "/message/"
	}
	return action{r.Method, p}
}

// inbox stores and serves messages. It is safe for concurrent use.
type inbox struct {
	version    string
	maxMessage atomic.Int64
	ids        idSource
}

func newPlugin(version string) sdk.Plugin {
	in := &inbox{version: version}
	in.maxMessage.Store(defaultMaxMessage)
	return sdk.Plugin{
		Name:      "inbox",
		Version:   version,
		HTTP:      in,
		Configure: in.configure,
	}
}

func (in *inbox) configure(_ context.Context, c sdk.Config) error {
	s := settings{MaxMessage: defaultMaxMessage}
	if err := c.Decode(&s); err != nil {
		return err
	}
	if s.MaxMessage <= 0 || s.MaxMessage > storeMaxValue {
		return fmt.Errorf("settings: max_message %d must be from 1 to %d bytes", s.MaxMessage, storeMaxValue)
	}
	in.maxMessage.Store(s.MaxMessage)
	return nil
}

func (in *inbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := actions[route(r)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h(in, w, r)
}

// post stores the request body as a new message and answers 201 with its
// id, only once the store has it on disk.
func (in *inbox) post(w http.ResponseWriter, r *http.Request) {
	limit := in.maxMessage.Load()
	if r.ContentLength > limit {
		tooLarge(w, limit)
		return
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			tooLarge(w, limit)
			return
		}
		http.Error(w, "inbox: reading the message: "+err.Error(), http.StatusBadRequest)
		return
	}
	if buf.Len() == 0 {
		http.Error(w, "inbox: the message is empty", http.StatusBadRequest)
		return
	}
	id := in.ids.next()
	if err := sdk.HostFrom(r.Context()).Put(r.Context(), keyPrefix+id, buf.Bytes()); err != nil {
		storeFailed(w, r, "inbox: storing message "+id, err)
		return
	}
	w.Header().Set("Location", "/message/"+id)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, id+"\n")
}

// listEntry is one message in the answer to GET /messages.
type listEntry struct {
	ID   string `json:"id"`
	Size int64  `json:"size"`
}

// list answers with the stored messages' ids and sizes, in id order.
func (in *inbox) list(w http.ResponseWriter, r *http.Request) {
	es, err := sdk.HostFrom(r.Context()).List(r.Context(), keyPrefix)
	if err != nil {
		storeFailed(w, r, "inbox: listing messages", err)
		return
	}
	out := make([]listEntry, 0, len(es))
	for _, e := range es {
		if id, ok := strings.CutPrefix(e.Key, keyPrefix); ok && validID(id) {
			out = append(out, listEntry{ID: id, Size: e.Size})
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "inbox: "+err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// get answers with the body of message ID.
func (in *inbox) get(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/message/")
	if !validID(id) {
		http.NotFound(w, r)
		return
	}
	body, err := sdk.HostFrom(r.Context()).Get(r.Context(), keyPrefix+id)
	if errors.Is(err, sdk.ErrNotFound) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		storeFailed(w, r, "inbox: reading message "+id, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func tooLarge(w http.ResponseWriter, limit int64) {
	http.Error(w, fmt.Sprintf("inbox: the message is larger than %d bytes", limit), http.StatusRequestEntityTooLarge)
}

// storeFailed logs a store error and answers 503 when there is no kernel to
// store into, 500 otherwise.
func storeFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	sdk.HostFrom(r.Context()).Logger().Error(what, "error", err)
	if errors.Is(err, sdk.ErrNoKernel) {
		http.Error(w, "inbox: no store (not connected to a kernel)", http.StatusServiceUnavailable)
		return
	}
	http.Error(w, "inbox: the store failed", http.StatusInternalServerError)
}

// Ids are the SDK's (sdk.IDs): time-ordered, and distinct across the old
// and new version of the plugin during a swap.
const idLen = sdk.IDLen

// idSource makes ids. The zero value is ready and safe for concurrent use.
type idSource struct{ sdk.IDs }

func (s *idSource) next() string { return s.IDs.Next(time.Now()) }

func validID(id string) bool { return sdk.ValidID(id) }

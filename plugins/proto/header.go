package proto

import "net/http"

// FromHTTPHeader converts an http.Header for the wire. The values slices are
// shared with h, not copied.
func FromHTTPHeader(h http.Header) []*Header {
	if len(h) == 0 {
		return nil
	}
	hs := make([]*Header, 0, len(h))
	for k, vs := range h {
		hs = append(hs, &Header{Name: k, Values: vs})
	}
	return hs
}

// ToHTTPHeader converts header fields from the wire into an http.Header.
// The values slices are shared with hs.
func ToHTTPHeader(hs []*Header) http.Header {
	h := make(http.Header, len(hs))
	for _, kv := range hs {
		h[kv.GetName()] = kv.GetValues()
	}
	return h
}

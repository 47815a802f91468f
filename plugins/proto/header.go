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

// CopyHTTPHeader converts an http.Header for the wire, as FromHTTPHeader
// does, but copies the values, so that h may change afterwards: what
// FromHTTPHeader(h.Clone()) gives, in three allocations.
func CopyHTTPHeader(h http.Header) []*Header {
	if len(h) == 0 {
		return nil
	}
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	values := make([]string, 0, n)
	fields := make([]Header, len(h))
	hs := make([]*Header, 0, len(h))
	for k, vs := range h {
		f := &fields[len(hs)]
		f.Name = k
		start := len(values)
		values = append(values, vs...)
		f.Values = values[start:len(values):len(values)]
		hs = append(hs, f)
	}
	return hs
}

package proto

import (
	"net/http"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// dropUnknown clears the unknown fields of m and of the messages in it.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				dropUnknown(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				dropUnknown(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			dropUnknown(v.Message())
		}
		return true
	})
}

// frames returns a message of every kind of frame either way, with every
// field set.
func frames() []proto.Message {
	hs := []*Header{{Name: "Content-Type", Values: []string{"text/plain"}}, {Name: "X-Two", Values: []string{"a", "b"}}}
	return []proto.Message{
		&Call{Id: 1, TimeoutNs: 5e9, Frame: &Call_Http{Http: &HTTPRequest{
			Method: "POST", Uri: "/x?y=1", Proto: "HTTP/1.1", Host: "example.test", Headers: hs,
			ContentLength: 3, TransferEncoding: []string{"chunked"}, RemoteAddr: "127.0.0.1:1", LocalAddr: "127.0.0.1:2",
			Listener: "web", Tls: true, Body: []byte("abc"), BodyEnd: true, Credit: 1 << 18,
		}}},
		&Call{Id: 2, Frame: &Call_Body{Body: &Body{Data: []byte("more"), End: true, Flush: true, Error: "cut", Trailers: hs}}},
		&Call{Id: 3, Frame: &Call_Credit{Credit: &Credit{Bytes: 4096}}},
		&Call{Id: 4, Frame: &Call_Cancel{Cancel: &Cancel{Reason: "client gone"}}},
		&Call{Id: 5, TimeoutNs: 1, Frame: &Call_Dns{Dns: &DNSQuery{Msg: []byte{1, 2, 3}, RemoteAddr: "r", Transport: "udp", Listener: "dns", LocalAddr: "l"}}},
		&Call{Id: 6, Frame: &Call_Line{Line: &LineEvent{
			Kind: LineEvent_BLOCK, ConnId: 9, Listener: "smtp", RemoteAddr: "r", LocalAddr: "l", Data: []byte("x\r\n"),
			Overflow: true, Size: 3, Reason: "why", FullState: true, State: map[string][]byte{"k": []byte("v"), "e": nil},
			StateVersion: "v2", Seq: 7, BaseSeq: 6, SinceUnixNano: 12345,
		}}},
		&Call{Id: 7, Frame: &Call_Tick{Tick: &Tick{Name: "t", ScheduledUnixNano: 1, Count: 2, Skipped: 3}}},
		&Reply{Id: 1, Frame: &Reply_Http{Http: &HTTPResponse{Status: 201, Headers: hs, Body: []byte("hi"), End: true, Flush: true, Trailers: hs, Cgi: true}}},
		&Reply{Id: 2, Frame: &Reply_Body{Body: &Body{Data: []byte("tail"), End: true, Trailers: hs}}},
		&Reply{Id: 3, Frame: &Reply_Failure{Failure: &Failure{Message: "boom"}}},
		&Reply{Id: 4, Frame: &Reply_Dns{Dns: &DNSReply{Msg: []byte{9}}}},
		&Reply{Id: 5, Frame: &Reply_Line{Line: &LineReply{
			Lines: [][]byte{[]byte("250 ok"), nil}, Close: true, Set: map[string][]byte{"k": []byte("v")},
			Deleted: []string{"d"}, Collect: &LineCollect{Terminator: ".", DotUnstuff: true, MaxBytes: 10}, NeedState: true,
		}}},
		&Reply{Id: 6, Frame: &Reply_Tick{Tick: &TickReply{}}},
	}
}

// TestVTMatchesProto checks that vtprotobuf's code, which the framed
// connections use, and the reflection-based proto package read each
// other's encodings of every frame alike.
func TestVTMatchesProto(t *testing.T) {
	for _, m := range frames() {
		vm := m.(Message)
		b := make([]byte, vm.SizeVT())
		if _, err := vm.MarshalToSizedBufferVT(b); err != nil {
			t.Fatalf("%v: MarshalToSizedBufferVT: %v", m, err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(m, back) {
			t.Errorf("vtprotobuf's encoding of %v reads back as %v (%v)", m, back, err)
		}
		std, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		vback := m.ProtoReflect().New().Interface().(Message)
		if err := vback.UnmarshalVT(std); err != nil || !proto.Equal(m, vback) {
			t.Errorf("proto's encoding of %v reads back with vtprotobuf as %v (%v)", m, vback, err)
		}
	}
}

// FuzzVTUnmarshal feeds arbitrary bytes to vtprotobuf's decoding of calls
// and replies: it must not panic, and whatever both it and the proto
// package accept must decode alike. Each refuses some of what the other
// takes: vtprotobuf takes strings that are not UTF-8, proto takes a known
// field of the wrong wire type as an unknown one.
func FuzzVTUnmarshal(f *testing.F) {
	for _, m := range frames() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []Message{new(Call), new(Reply)} {
			std := m.ProtoReflect().New().Interface()
			verr := m.UnmarshalVT(b)
			serr := proto.Unmarshal(b, std)
			if verr != nil || serr != nil {
				continue
			}
			// Unknown fields are kept as bytes, which the two may keep
			// differently (a tag's varint made minimal, or not); what
			// this kernel and SDK read is the known fields.
			dropUnknown(m.ProtoReflect())
			dropUnknown(std.ProtoReflect())
			if !proto.Equal(m, std) {
				t.Fatalf("%x decodes as %v with vtprotobuf, %v with proto", b, m, std)
			}
		}
	})
}

func TestCopyHTTPHeader(t *testing.T) {
	if CopyHTTPHeader(nil) != nil || CopyHTTPHeader(http.Header{}) != nil {
		t.Error("an empty header is not nil on the wire")
	}
	h := http.Header{"A": {"1", "2"}, "B": {"3"}, "Empty": {}}
	hs := CopyHTTPHeader(h)
	h["A"][0] = "changed"
	h["B"] = append(h["B"], "4")
	got := ToHTTPHeader(hs)
	want := http.Header{"A": {"1", "2"}, "B": {"3"}, "Empty": {}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, vs := range want {
		if !slices.Equal(got[k], vs) {
			t.Errorf("%s: got %q, want %q", k, got[k], vs)
		}
	}
	// Appending to one field's values must not run into the next's.
	got["A"] = append(got["A"], "3")
	for _, f := range hs {
		if f.Name == "B" && f.Values[0] != "3" {
			t.Errorf("an append to A's values overwrote B's: %q", f.Values)
		}
	}
}

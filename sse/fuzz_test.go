package sse_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/sse"
)

// FuzzRoundTrip checks that decoding an encoded event gives the event back
// (with line breaks normalized to LF, the default type, and retry in whole
// milliseconds), for every event AppendEvent accepts.
func FuzzRoundTrip(f *testing.F) {
	f.Add("1", "add", "hello", int64(1500))
	f.Add("", "", "", int64(0))
	f.Add("x y", " spaced", "a\r\nb\rc\nd\n", int64(1))
	f.Add("\uFEFF", "\uFEFF", "\uFEFFdata", int64(0))
	f.Add("id:colon", "event:colon", "data: colon\n\n\n", int64(999999))
	f.Fuzz(func(t *testing.T, id, typ, data string, retryMS int64) {
		if !utf8.ValidString(id) || !utf8.ValidString(typ) || !utf8.ValidString(data) {
			return // the stream is UTF-8: other bytes are decoded to U+FFFD
		}
		e := sse.Event{ID: id, Type: typ, Data: data, Retry: time.Duration(retryMS%1e9) * time.Millisecond}
		b, err := sse.AppendEvent(nil, e)
		if err != nil {
			if !strings.ContainsAny(id, "\r\n\x00") && !strings.ContainsAny(typ, "\r\n") {
				t.Fatalf("AppendEvent(%+v) refused a valid event: %v", e, err)
			}
			return
		}
		d := sse.NewDecoder(bytes.NewReader(b))
		got, err := d.Next()
		if err != nil {
			t.Fatalf("decoding %q (from %+v): %v", b, e, err)
		}
		want := e
		if want.Type == "" {
			want.Type = "message"
		}
		want.Data = strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
		if want.Retry < 0 {
			want.Retry = 0
		}
		if got != want {
			t.Fatalf("decode(encode(%+v)) = %+v; stream %q", e, got, b)
		}
		if _, err := d.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("more than one event in %q: %v", b, err)
		}
	})
}

// FuzzDecoder checks that the decoder never panics and that how the input
// is split across reads never changes the events.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{
		"data\n\ndata\ndata\n\ndata:",
		"\uFEFFid: 1\r\ndata: a\r\rdata: b\n\n",
		"retry: 10\nevent: x\ndata: \xff\xfe\n\n",
		": comment\n\n\n\r\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole := decodeEvents(bytes.NewReader(in))
		split := decodeEvents(iotest.OneByteReader(bytes.NewReader(in)))
		if len(whole) != len(split) {
			t.Fatalf("%q: %d events whole, %d split", in, len(whole), len(split))
		}
		for i := range whole {
			if whole[i] != split[i] {
				t.Fatalf("%q: event %d is %+v whole, %+v split", in, i, whole[i], split[i])
			}
			if !utf8.ValidString(whole[i].Data) || !utf8.ValidString(whole[i].ID) || !utf8.ValidString(whole[i].Type) {
				t.Fatalf("%q: event %d is not valid UTF-8: %+v", in, i, whole[i])
			}
		}
	})
}

func decodeEvents(r io.Reader) []sse.Event {
	d := sse.NewDecoder(r)
	var out []sse.Event
	for {
		e, err := d.Next()
		if err != nil {
			return out
		}
		out = append(out, e)
	}
}

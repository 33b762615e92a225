package sse_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/sse"
)

// decodeAll returns every event of stream, read through r (a reader that
// may split the input anywhere).
func decodeAll(t *testing.T, r io.Reader) []sse.Event {
	t.Helper()
	d := sse.NewDecoder(r)
	var got []sse.Event
	for {
		e, err := d.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		require.NoError(t, err)
		got = append(got, e)
	}
}

func msg(data string) sse.Event { return sse.Event{Type: "message", Data: data} }

// Each rule of the WHATWG HTML standard's "interpreting an event stream".
func TestDecoderFollowsTheStandard(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []sse.Event
	}{
		{name: "the standard's vector: data, then two data lines, then an unterminated one",
			stream: "data\n\ndata\ndata\n\ndata:", want: []sse.Event{msg(""), msg("\n")}},
		{name: "data lines are joined with LF and the last LF removed",
			stream: "data: a\ndata: b\n\n", want: []sse.Event{msg("a\nb")}},
		{name: "one space after the colon is removed, no more",
			stream: "data:  two spaces\ndata:none\n\n", want: []sse.Event{msg(" two spaces\nnone")}},
		{name: "a field without a colon has an empty value",
			stream: "data\ndata\n\n", want: []sse.Event{msg("\n")}},
		{name: "lines starting with a colon are comments",
			stream: ": hello\ndata: x\n:another\n\n", want: []sse.Event{msg("x")}},
		{name: "unknown fields are ignored",
			stream: "foo: bar\ndata: x\nDATA: y\nData: z\n\n", want: []sse.Event{msg("x")}},
		{name: "a blank line without data dispatches nothing",
			stream: "event: ping\n\ndata: x\n\n", want: []sse.Event{msg("x")}},
		{name: "the event type applies to one event and defaults to message",
			stream: "event: add\ndata: 1\n\ndata: 2\n\n",
			want:   []sse.Event{{Type: "add", Data: "1"}, msg("2")}},
		{name: "an empty event field means message",
			stream: "event:\ndata: x\n\n", want: []sse.Event{msg("x")}},
		{name: "the last event id persists across events",
			stream: "id: 1\ndata: a\n\ndata: b\n\n",
			want:   []sse.Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}}},
		{name: "an empty id resets the last event id",
			stream: "id: 1\ndata: a\n\nid\ndata: b\n\n",
			want:   []sse.Event{{ID: "1", Type: "message", Data: "a"}, msg("b")}},
		{name: "an id containing NUL is ignored",
			stream: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			want:   []sse.Event{{ID: "1", Type: "message", Data: "a"}, {ID: "1", Type: "message", Data: "b"}}},
		{name: "an id set by a dataless block applies to the next event",
			stream: "id: 7\n\ndata: a\n\n", want: []sse.Event{{ID: "7", Type: "message", Data: "a"}}},
		{name: "retry with only ASCII digits is taken",
			stream: "retry: 1500\ndata: a\n\n", want: []sse.Event{{Type: "message", Data: "a", Retry: 1500 * time.Millisecond}}},
		{name: "retry with anything else is ignored",
			stream: "retry: 15s\nretry: -1\nretry: 1 5\nretry: \nretry:+5\ndata: a\n\n", want: []sse.Event{msg("a")}},
		{name: "CRLF, LF and CR all end lines",
			stream: "data: a\r\ndata: b\rdata: c\n\r\n", want: []sse.Event{msg("a\nb\nc")}},
		{name: "CR CR is two line ends: a blank line dispatches",
			stream: "data: a\r\rdata: b\r\r", want: []sse.Event{msg("a"), msg("b")}},
		{name: "a leading BOM is skipped",
			stream: "\uFEFFdata: a\n\n", want: []sse.Event{msg("a")}},
		{name: "only one leading BOM is skipped: a second makes the field unknown",
			stream: "\uFEFF\uFEFFdata: a\n\ndata: b\n\n", want: []sse.Event{msg("b")}},
		{name: "a BOM elsewhere is data",
			stream: "data: \uFEFFa\n\n", want: []sse.Event{msg("\uFEFFa")}},
		{name: "invalid UTF-8 becomes U+FFFD, one per maximal subpart",
			stream: "data: a\xffb\xe2\x82c\xf0\x9f\x98\n\n", want: []sse.Event{msg("a\uFFFDb\uFFFDc\uFFFD")}},
		{name: "a surrogate encoded in UTF-8 is invalid",
			stream: "data: \xed\xa0\x80\n\n", want: []sse.Event{msg("\uFFFD\uFFFD\uFFFD")}},
		{name: "an incomplete event at the end of the stream is discarded",
			stream: "data: a\n\ndata: b\n", want: []sse.Event{msg("a")}},
		{name: "a colon in the value is kept",
			stream: "data: a: b\n\n", want: []sse.Event{msg("a: b")}},
		{name: "an empty stream has no events", stream: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeAll(t, strings.NewReader(tt.stream))
			assert.Equal(t, tt.want, got, "stream %q", tt.stream)
			// The same, delivered one byte per read: line ends, BOM and
			// UTF-8 sequences split across reads.
			got = decodeAll(t, iotest.OneByteReader(strings.NewReader(tt.stream)))
			assert.Equal(t, tt.want, got, "stream %q, one byte per read", tt.stream)
		})
	}
}

func TestDecoderCRLFSplitAcrossReads(t *testing.T) {
	// "data: a\r" then "\n\n": the LF belongs to the CR, so one blank line
	// follows, not two: exactly one event.
	r := io.MultiReader(strings.NewReader("data: a\r"), strings.NewReader("\ndata: b\r"), strings.NewReader("\n\r\n"))
	assert.Equal(t, []sse.Event{msg("a\nb")}, decodeAll(t, r))
}

func TestDecoderReportsStateAndErrors(t *testing.T) {
	d := sse.NewDecoder(strings.NewReader("retry: 250\nid: x\n\n: no event here\n"))
	_, err := d.Next()
	assert.ErrorIs(t, err, io.EOF)
	assert.Equal(t, "x", d.LastEventID())
	r, ok := d.Retry()
	assert.True(t, ok)
	assert.Equal(t, 250*time.Millisecond, r)

	d = sse.NewDecoder(strings.NewReader("data: " + strings.Repeat("x", 100) + "\n\n"))
	d.Buffer(64)
	_, err = d.Next()
	assert.ErrorIs(t, err, sse.ErrEventTooLarge)

	d = sse.NewDecoder(strings.NewReader(strings.Repeat("data: 0123456789\n", 10) + "\n"))
	d.Buffer(64)
	_, err = d.Next()
	assert.ErrorIs(t, err, sse.ErrEventTooLarge, "data accumulated over lines is bounded too")

	d = sse.NewDecoder(iotest.ErrReader(errors.New("boom")))
	_, err = d.Next()
	assert.EqualError(t, err, "boom")
}

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name    string
		give    sse.Event
		want    string
		wantErr bool
	}{
		{name: "data only", give: sse.Event{Data: "hi"}, want: "data: hi\n\n"},
		{name: "all fields", give: sse.Event{ID: "7", Type: "add", Data: "x", Retry: 1500 * time.Millisecond},
			want: "retry: 1500\nid: 7\nevent: add\ndata: x\n\n"},
		{name: "LF, CR and CRLF split data lines", give: sse.Event{Data: "a\nb\rc\r\nd"},
			want: "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{name: "empty data still dispatches", give: sse.Event{Data: ""}, want: "data: \n\n"},
		{name: "a trailing line break becomes an empty last line", give: sse.Event{Data: "a\n"}, want: "data: a\ndata: \n\n"},
		{name: "leading spaces survive", give: sse.Event{Data: " a"}, want: "data:  a\n\n"},
		{name: "id with LF is rejected", give: sse.Event{ID: "a\nb", Data: "x"}, wantErr: true},
		{name: "id with CR is rejected", give: sse.Event{ID: "a\rb", Data: "x"}, wantErr: true},
		{name: "id with NUL is rejected", give: sse.Event{ID: "a\x00b", Data: "x"}, wantErr: true},
		{name: "event with LF is rejected", give: sse.Event{Type: "a\nb", Data: "x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sse.AppendEvent([]byte("prefix|"), tt.give)
			if tt.wantErr {
				assert.ErrorIs(t, err, sse.ErrInvalidEvent)
				assert.Equal(t, "prefix|", string(got), "nothing written on error")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "prefix|"+tt.want, string(got))
		})
	}
	assert.Equal(t, ":\n\n", string(sse.AppendComment(nil, "")))
	assert.Equal(t, ": a\n: b\n\n", string(sse.AppendComment(nil, "a\r\nb")))
}

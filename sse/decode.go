package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// DefaultMaxEventSize bounds a line and an event's data in a Decoder.
const DefaultMaxEventSize = 1 << 20

// ErrEventTooLarge is returned by Decoder.Next for a line or an event's
// data longer than the decoder's bound.
var ErrEventTooLarge = errors.New("sse: event too large")

// Decoder reads events from an event stream, following the parsing rules of
// the WHATWG HTML standard ("server-sent events", "interpreting an event
// stream") exactly: UTF-8 with invalid sequences replaced by U+FFFD, one
// leading byte order mark skipped, lines ended by CRLF, LF or CR (also when
// the pair is split across reads), "field: value" with one leading space of
// the value removed, a line without a colon taken as a field with an empty
// value, lines that start with a colon ignored, unknown fields ignored,
// "data" lines joined with LF, "event" defaulting to "message", an "id"
// containing NUL ignored and an empty one resetting the last event ID,
// "retry" honoured only when all ASCII digits, an event dispatched on a
// blank line, and an incomplete event at the end of the stream discarded.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	r   io.Reader
	max int

	buf        []byte // read buffer; buf[start:end] is unread
	start, end int
	err        error // sticky read error
	started    bool  // the BOM check is done
	skipLF     bool  // the last line ended with CR: an LF next is part of it

	line      []byte // the current line, when it spans reads
	data      []byte // data buffer
	eventType []byte // event type buffer
	lastID    string // last event ID buffer
	retry     time.Duration
	retryEver bool // a valid retry field was seen
	retrySeen bool // retry set since the last dispatch
	decoded   []byte
}

// NewDecoder returns a decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r, max: DefaultMaxEventSize}
}

// Buffer sets the bound on a line and on an event's data (default
// DefaultMaxEventSize). Call it before the first Next.
func (d *Decoder) Buffer(max int) {
	if max > 0 {
		d.max = max
	}
}

// LastEventID returns the last event ID buffer: what a reconnecting client
// sends as Last-Event-ID.
func (d *Decoder) LastEventID() string { return d.lastID }

// Retry returns the reconnection time the stream asked for, if it did.
func (d *Decoder) Retry() (time.Duration, bool) { return d.retry, d.retryEver }

// Next returns the next dispatched event. Its ID is the last event ID at
// dispatch, its Type "message" unless the stream named one, and its Retry
// the "retry" value received since the previous event, if any. At the end
// of the stream it returns io.EOF (an incomplete event is discarded), or
// the read error.
func (d *Decoder) Next() (Event, error) {
	for {
		line, err := d.readLine()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if e, ok := d.dispatch(); ok {
				return e, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		if err := d.field(line); err != nil {
			return Event{}, err
		}
	}
}

func (d *Decoder) dispatch() (Event, bool) {
	if len(d.data) == 0 {
		d.eventType = d.eventType[:0]
		return Event{}, false
	}
	data := d.data
	if data[len(data)-1] == '\n' {
		data = data[:len(data)-1]
	}
	e := Event{ID: d.lastID, Type: "message", Data: string(data)}
	if len(d.eventType) > 0 {
		e.Type = string(d.eventType)
	}
	if d.retrySeen {
		e.Retry = d.retry
		d.retrySeen = false
	}
	d.data = d.data[:0]
	d.eventType = d.eventType[:0]
	return e, true
}

func (d *Decoder) field(line []byte) error {
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "event":
		d.eventType = append(d.eventType[:0], value...)
	case "data":
		if len(d.data)+len(value)+1 > d.max {
			return fmt.Errorf("%w: data over %d bytes", ErrEventTooLarge, d.max)
		}
		d.data = append(d.data, value...)
		d.data = append(d.data, '\n')
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			d.lastID = string(value)
		}
	case "retry":
		if ms, ok := digits(value); ok {
			d.retry = ms
			d.retrySeen, d.retryEver = true, true
		}
	}
	return nil
}

// digits parses a run of ASCII digits as milliseconds, saturating.
func digits(v []byte) (time.Duration, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var ms uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms < math.MaxInt64/10 {
			ms = ms*10 + uint64(c-'0')
		}
	}
	if ms > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(ms) * time.Millisecond, true
}

// readLine returns the next line without its end, decoded from UTF-8. The
// slice is valid until the next call.
func (d *Decoder) readLine() ([]byte, error) {
	d.line = d.line[:0]
	spanning := false
	for {
		if d.start == d.end {
			if d.err != nil {
				return nil, d.err // EOF mid-line: the partial line is discarded
			}
			d.fill()
			continue
		}
		if !d.started {
			if d.end-d.start < 3 && d.err == nil && bytes.HasPrefix([]byte("\xEF\xBB\xBF"), d.buf[d.start:d.end]) {
				d.fill() // not enough bytes yet to tell a BOM
				continue
			}
			d.started = true
			if bytes.HasPrefix(d.buf[d.start:d.end], []byte("\xEF\xBB\xBF")) {
				d.start += 3
				continue
			}
		}
		if d.skipLF {
			d.skipLF = false
			if d.buf[d.start] == '\n' {
				d.start++
				continue
			}
		}
		chunk := d.buf[d.start:d.end]
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			if len(d.line)+len(chunk) > d.max {
				return nil, fmt.Errorf("%w: line over %d bytes", ErrEventTooLarge, d.max)
			}
			d.line = append(d.line, chunk...)
			spanning = true
			d.start = d.end
			continue
		}
		if chunk[i] == '\r' {
			d.skipLF = true
		}
		d.start += i + 1
		line := chunk[:i]
		if spanning {
			if len(d.line)+len(line) > d.max {
				return nil, fmt.Errorf("%w: line over %d bytes", ErrEventTooLarge, d.max)
			}
			d.line = append(d.line, line...)
			line = d.line
		}
		if len(line) > d.max {
			return nil, fmt.Errorf("%w: line over %d bytes", ErrEventTooLarge, d.max)
		}
		if !utf8.Valid(line) {
			d.decoded = decodeUTF8(d.decoded[:0], line)
			line = d.decoded
		}
		return line, nil
	}
}

// fill reads more input, keeping what is unread.
func (d *Decoder) fill() {
	if d.buf == nil {
		d.buf = make([]byte, 4096)
	}
	if d.start > 0 {
		n := copy(d.buf, d.buf[d.start:d.end])
		d.start, d.end = 0, n
	}
	if d.end == len(d.buf) {
		d.buf = append(d.buf, make([]byte, len(d.buf))...)
	}
	for range 100 {
		n, err := d.r.Read(d.buf[d.end:])
		d.end += n
		if err != nil {
			d.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	d.err = io.ErrNoProgress
}

// decodeUTF8 appends b decoded as the WHATWG Encoding standard's UTF-8
// decoder does: each maximal invalid subsequence becomes one U+FFFD.
func decodeUTF8(dst, b []byte) []byte {
	var cp rune
	needed, seen := 0, 0
	lower, upper := byte(0x80), byte(0xBF)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if needed == 0 {
			switch {
			case c <= 0x7F:
				dst = append(dst, c)
			case c >= 0xC2 && c <= 0xDF:
				needed, cp = 1, rune(c&0x1F)
			case c >= 0xE0 && c <= 0xEF:
				if c == 0xE0 {
					lower = 0xA0
				}
				if c == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(c&0x0F)
			case c >= 0xF0 && c <= 0xF4:
				if c == 0xF0 {
					lower = 0x90
				}
				if c == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(c&0x07)
			default:
				dst = utf8.AppendRune(dst, utf8.RuneError)
			}
			continue
		}
		if c < lower || c > upper {
			cp, needed, seen, lower, upper = 0, 0, 0, 0x80, 0xBF
			dst = utf8.AppendRune(dst, utf8.RuneError)
			i-- // the byte starts afresh
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(c&0x3F)
		seen++
		if seen == needed {
			dst = utf8.AppendRune(dst, cp)
			cp, needed, seen = 0, 0, 0
		}
	}
	if needed != 0 {
		dst = utf8.AppendRune(dst, utf8.RuneError)
	}
	return dst
}

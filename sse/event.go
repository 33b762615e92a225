package sse

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event is one server-sent event.
type Event struct {
	// ID becomes the client's last event ID, which a reconnecting
	// EventSource sends back as Last-Event-ID. The Handler uses the pubsub
	// cursor. Must not contain CR, LF or NUL.
	ID string
	// Type is the event's name ("event:" field). Empty means "message", the
	// type an EventSource's onmessage receives. Must not contain CR or LF.
	Type string
	// Data is the payload. Line breaks of any kind (CR, LF, CRLF) are
	// allowed: each line is sent as its own "data:" field and the client
	// joins them with LF.
	Data string
	// Retry, when positive, asks the client to wait this long before
	// reconnecting ("retry:" field, whole milliseconds).
	Retry time.Duration
}

// ErrInvalidEvent is returned for an event that cannot be encoded without
// changing its meaning: an ID or Type with a line break, or an ID with NUL.
var ErrInvalidEvent = errors.New("sse: invalid event")

// AppendEvent appends the wire form of e to dst: "retry:", "id:", "event:"
// and "data:" lines, then the blank line that dispatches it. It fails with
// ErrInvalidEvent (and appends nothing) rather than write a broken event.
func AppendEvent(dst []byte, e Event) ([]byte, error) {
	if strings.ContainsAny(e.ID, "\r\n\x00") {
		return dst, fmt.Errorf("%w: id %q contains CR, LF or NUL", ErrInvalidEvent, e.ID)
	}
	if strings.ContainsAny(e.Type, "\r\n") {
		return dst, fmt.Errorf("%w: event type %q contains CR or LF", ErrInvalidEvent, e.Type)
	}
	return appendEvent(dst, e.ID, e.Type, e.Data, e.Retry), nil
}

// appendEvent encodes fields already checked. data is string or []byte.
func appendEvent[T string | []byte](dst []byte, id, typ string, data T, retry time.Duration) []byte {
	if retry > 0 {
		dst = append(dst, "retry: "...)
		dst = strconv.AppendInt(dst, max(retry.Milliseconds(), 1), 10)
		dst = append(dst, '\n')
	}
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	if typ != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, typ...)
		dst = append(dst, '\n')
	}
	// One "data:" line per line of data, whatever ends it.
	for {
		end := len(data)
		for i := 0; i < len(data); i++ {
			if data[i] == '\n' || data[i] == '\r' {
				end = i
				break
			}
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:end]...)
		dst = append(dst, '\n')
		if end == len(data) {
			break
		}
		if data[end] == '\r' && end+1 < len(data) && data[end+1] == '\n' {
			end++
		}
		data = data[end+1:]
	}
	return append(dst, '\n')
}

// AppendComment appends a comment, which clients ignore: a heartbeat that
// keeps proxies from closing an idle stream. Each line of text becomes its
// own ":" line.
func AppendComment(dst []byte, text string) []byte {
	for {
		end := strings.IndexAny(text, "\r\n")
		if end < 0 {
			end = len(text)
		}
		dst = append(dst, ':')
		if end > 0 {
			dst = append(dst, ' ')
			dst = append(dst, text[:end]...)
		}
		dst = append(dst, '\n')
		if end == len(text) {
			break
		}
		if text[end] == '\r' && end+1 < len(text) && text[end+1] == '\n' {
			end++
		}
		text = text[end+1:]
	}
	return append(dst, '\n')
}

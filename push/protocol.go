package push

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/pubsub"
)

// Message types of the wire protocol (the "type" member). See the package
// documentation for the full protocol.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypeSend        = "send"
	TypeWelcome     = "welcome"
	TypeMessage     = "message"
	TypeGap         = "gap"
	TypeReply       = "reply"
	TypeError       = "error"
)

// wireMsg is one protocol message, either direction. Payloads travel in one
// of data (JSON), text (a JSON string) or base64.
type wireMsg struct {
	Type   string          `json:"type"`
	ID     string          `json:"id,omitempty"`
	Topic  string          `json:"topic,omitempty"`
	Sub    string          `json:"sub,omitempty"`
	After  string          `json:"after,omitempty"`
	Cursor string          `json:"cursor,omitempty"`
	Reason string          `json:"reason,omitempty"`
	Error  string          `json:"error,omitempty"`
	Conn   string          `json:"conn,omitempty"`
	User   string          `json:"user,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Text   *string         `json:"text,omitempty"`
	Base64 []byte          `json:"base64,omitempty"`
}

// payload returns the bytes the message carries, exactly as they were
// sent.
func (w *wireMsg) payload() []byte {
	switch {
	case len(w.Data) > 0:
		return w.Data
	case w.Text != nil:
		return []byte(*w.Text)
	default:
		return w.Base64
	}
}

var errEmptyFrame = errors.New("push: frame holds no message")

// decodeFrame splits a frame into its newline-delimited messages and
// decodes each. It fails on the first line that is not a JSON object with
// a type.
func decodeFrame(frame []byte, fn func(*wireMsg) error) error {
	n := 0
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var m wireMsg
		if err := json.Unmarshal(line, &m); err != nil {
			return err
		}
		if m.Type == "" {
			return errors.New(`push: message without "type"`)
		}
		n++
		if err := fn(&m); err != nil {
			return err
		}
	}
	if n == 0 {
		return errEmptyFrame
	}
	return nil
}

// appendPayload appends the member that carries data: "data" with the
// bytes themselves when they are one line of valid JSON, "text" when they
// are UTF-8, "base64" otherwise. Empty data adds nothing. The peer gets the
// same bytes back whichever form it is.
func appendPayload(b, data []byte) []byte {
	switch {
	case len(data) == 0:
		return b
	case bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 && json.Valid(data):
		b = append(b, `,"data":`...)
		return append(b, data...)
	case utf8.Valid(data):
		b = append(b, `,"text":`...)
		return appendString(b, string(data))
	default:
		b = append(b, `,"base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, data)
		return append(b, '"')
	}
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendField appends ,"key":"value" (value escaped), or nothing for an
// empty value.
func appendField(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// encodeMessage is the frame line of a message delivered through a
// subscription to sub (empty for a message addressed to a connection, a
// user or everyone, which carries no topic and no cursor).
func encodeMessage(sub string, m *pubsub.Message) []byte {
	b := make([]byte, 0, 64+len(sub)+len(m.Topic)+len(m.Cursor)+len(m.Data)+len(m.Data)/8)
	b = append(b, `{"type":"message"`...)
	if sub != "" {
		b = appendField(b, "sub", sub)
		b = appendField(b, "topic", m.Topic)
		b = appendField(b, "cursor", string(m.Cursor))
	}
	b = appendPayload(b, m.Data)
	return append(b, '}')
}

func encodeGap(sub, after, reason string) []byte {
	b := append([]byte(nil), `{"type":"gap"`...)
	b = appendField(b, "sub", sub)
	b = appendField(b, "after", after)
	b = appendField(b, "reason", reason)
	return append(b, '}')
}

func encodeReply(id string, data []byte) []byte {
	b := append([]byte(nil), `{"type":"reply"`...)
	b = appendField(b, "id", id)
	b = appendPayload(b, data)
	return append(b, '}')
}

func encodeError(id, msg string) []byte {
	b := append([]byte(nil), `{"type":"error"`...)
	b = appendField(b, "id", id)
	b = appendField(b, "error", msg)
	return append(b, '}')
}

func encodeWelcome(conn, user string) []byte {
	b := append([]byte(nil), `{"type":"welcome"`...)
	b = appendField(b, "conn", conn)
	b = appendField(b, "user", user)
	return append(b, '}')
}

// encodeRequest is a client's line: subscribe, unsubscribe or send.
func encodeRequest(typ, id, topic, after string, data []byte) []byte {
	b := append([]byte(nil), `{"type":`...)
	b = appendString(b, typ)
	b = appendField(b, "id", id)
	b = appendField(b, "topic", topic)
	b = appendField(b, "after", after)
	b = appendPayload(b, data)
	return append(b, '}')
}

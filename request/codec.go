package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"sync"
)

// Codec turns values into bodies and back. Implementations are safe for
// concurrent use. Unmarshal must not keep data, nor anything that points
// into it, once it returned: the buffer is reused.
type Codec interface {
	// ContentType is the media type the codec reads and writes, without
	// parameters: "application/json".
	ContentType() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec, encoding/json under application/json.
//
// A Handler's default is JSON{DisallowUnknownFields: true}: a request
// with a member the Req type lacks (a typo, a client newer than the server)
// gets 400 instead of being silently half-read. A Client's default is
// JSON{}, so a server that adds response fields never breaks old clients.
type JSON struct {
	// DisallowUnknownFields makes Unmarshal fail on an object member that
	// the target has no field for.
	DisallowUnknownFields bool
}

var _ Codec = JSON{}

// ContentType returns "application/json".
func (JSON) ContentType() string { return "application/json" }

// Marshal is json.Marshal.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes exactly one JSON value from data; trailing data other
// than white space is an error. Without DisallowUnknownFields it is
// json.Unmarshal, with one difference: json.Unmarshal refuses data after
// the value before it stores anything in v, Unmarshal once it stored the
// value (with the same error). With DisallowUnknownFields it is a
// json.Decoder's Decode, and then the check for trailing data.
//
// It runs on pooled decoders, which saves most of the allocations of a
// decoding. An input they cannot answer as the reference would (any
// error, data after the value) is decoded again the reference way: errors
// are the reference's, offsets included, at twice the cost of finding
// them.
func (c JSON) Unmarshal(data []byte, v any) error {
	strict := 0
	if c.DisallowUnknownFields {
		strict = 1
	}
	pool := &jsonDecoders[strict]
	d, _ := pool.Get().(*jsonDecoder)
	if d == nil {
		d = &jsonDecoder{}
		d.dec = json.NewDecoder(&d.r)
		if c.DisallowUnknownFields {
			d.dec.DisallowUnknownFields()
		}
	}
	d.r.Reset(data)
	start := d.dec.InputOffset()
	if err := d.dec.Decode(v); err == nil && d.dec.InputOffset()-start == int64(len(data)) {
		// The value ended at the end of data: the decoder holds nothing
		// of it, and is as good as new.
		d.r.Reset(nil)
		if len(data) <= maxPooledDecoderBytes {
			pool.Put(d)
		}
		return nil
	}
	// The decoder's state is spent (an error sticks, bytes after the
	// value stay buffered): leave it to the collector.
	return c.unmarshal(data, v)
}

// The decoders that JSON.Unmarshal reuses, lenient and strict. One that
// decoded more than maxPooledDecoderBytes is not kept, so that the pool
// never pins large buffers.
var jsonDecoders [2]sync.Pool

const maxPooledDecoderBytes = 64 << 10

type jsonDecoder struct {
	r   bytes.Reader
	dec *json.Decoder
}

// unmarshal is the reference decoding, for its exact errors.
func (c JSON) unmarshal(data []byte, v any) error {
	if !c.DisallowUnknownFields {
		return json.Unmarshal(data, v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// jsonEncoder is a json.Encoder writing into its own buffer, pooled: the
// bytes of json.Marshal without its copy.
type jsonEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var jsonEncoders = sync.Pool{New: func() any {
	e := new(jsonEncoder)
	e.enc = json.NewEncoder(&e.buf)
	return e
}}

// release gives the encoder back; the bytes it returned are no longer
// valid. A nil encoder is fine.
func (e *jsonEncoder) release() {
	if e != nil && e.buf.Cap() <= maxPooledBytes {
		jsonEncoders.Put(e)
	}
}

// encode returns v's encoding by c. For JSON the bytes are those of
// json.Marshal, in a pooled buffer that the caller releases through the
// returned encoder once they are written; another codec's Marshal
// returns no encoder.
func encode(c Codec, v any) ([]byte, *jsonEncoder, error) {
	if _, ok := c.(JSON); !ok {
		b, err := c.Marshal(v)
		return b, nil, err
	}
	e := jsonEncoders.Get().(*jsonEncoder)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		e.release()
		return nil, nil, err
	}
	b := e.buf.Bytes()
	return b[:len(b)-1], e, nil // without the newline Encode adds
}

// mediaType returns the media type of a Content-Type value, lower case and
// without parameters. The common exact values skip the parser.
func mediaType(v string) string {
	if v == "application/json" || v == "" {
		return v
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(v))
	}
	return mt
}

// codecFor returns the codec whose media type is ct.
func codecFor(codecs []Codec, ct string) Codec {
	mt := mediaType(ct)
	for _, c := range codecs {
		if c.ContentType() == mt {
			return c
		}
	}
	return nil
}

// negotiate picks the response codec for an Accept header: the index of
// the first of codecs that it accepts (q-values other than q=0 are not
// ranked), or -1. An absent header accepts the first codec.
func negotiate(codecs []Codec, accept string) int {
	if accept == "" || accept == "*/*" {
		return 0
	}
	for i, c := range codecs {
		if accept == c.ContentType() {
			return i
		}
	}
	for i, c := range codecs {
		ct := c.ContentType()
		major, _, _ := strings.Cut(ct, "/")
		for part := range strings.SplitSeq(accept, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || params["q"] == "0" || params["q"] == "0.0" || params["q"] == "0.00" || params["q"] == "0.000" {
				continue
			}
			if mt == ct || mt == "*/*" || mt == major+"/*" {
				return i
			}
		}
	}
	return -1
}

func contentTypes(codecs []Codec) string {
	var b strings.Builder
	for i, c := range codecs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.ContentType())
	}
	return b.String()
}

// decodeError describes a body the codec could not read, for the caller.
func decodeError(err error) *Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return Errorf(InvalidArgument, "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ) && typ.Field != "":
		e := Errorf(InvalidArgument, "field %q: want a JSON %s, got %s", typ.Field, typ.Type, typ.Value)
		e.Fields = []FieldError{{Field: typ.Field, Detail: fmt.Sprintf("want %s, got %s", typ.Type, typ.Value)}}
		return e
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(InvalidArgument, "malformed body: unexpected end")
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field = strings.Trim(field, `"`)
		e := Errorf(InvalidArgument, "unknown field %q", field)
		e.Fields = []FieldError{{Field: field, Detail: "unknown field"}}
		return e
	}
	return Errorf(InvalidArgument, "malformed body: %v", err)
}

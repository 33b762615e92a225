package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// Codec turns values into bodies and back. Implementations are safe for
// concurrent use.
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
// than white space is an error.
func (c JSON) Unmarshal(data []byte, v any) error {
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

// negotiate picks the response codec for an Accept header: the first of
// codecs that it accepts (q-values other than q=0 are not ranked). An
// absent header accepts the first codec.
func negotiate(codecs []Codec, accept string) Codec {
	if accept == "" || accept == "*/*" {
		return codecs[0]
	}
	for _, c := range codecs {
		if accept == c.ContentType() {
			return c
		}
	}
	for _, c := range codecs {
		ct := c.ContentType()
		major, _, _ := strings.Cut(ct, "/")
		for part := range strings.SplitSeq(accept, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || params["q"] == "0" || params["q"] == "0.0" || params["q"] == "0.00" || params["q"] == "0.000" {
				continue
			}
			if mt == ct || mt == "*/*" || mt == major+"/*" {
				return c
			}
		}
	}
	return nil
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

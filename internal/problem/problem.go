// Package problem writes and reads RFC 9457 problem details, the JSON body
// that the HTTP edges of every pattern use to say why a request failed.
//
// Servers build a [Details] (usually with [New]) and send it with [Write];
// clients turn a failed response back into one with [Read]. Extension
// members (RFC 9457 section 3.2) travel at the top level of the JSON object
// and live in Details.Extensions on the Go side.
//
// An empty Type means "about:blank" (RFC 9457 section 4.2.1): the problem
// has no meaning beyond its HTTP status. Write omits the member in that case
// and Read leaves Type empty when the member is absent, so code compares
// against "" only.
package problem

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
)

// ContentType is the media type of a problem details body.
const ContentType = "application/problem+json"

// MaxBodySize bounds how much of a response body Read takes.
const MaxBodySize = 64 << 10

// Details is one problem details object.
type Details struct {
	// Type is a URI reference naming the problem type; empty means
	// "about:blank".
	Type string `json:"type,omitempty"`
	// Title is a short, human-readable summary of the problem type.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence of the problem, for a human.
	Detail string `json:"detail,omitempty"`
	// Instance is a URI reference naming this occurrence.
	Instance string `json:"instance,omitempty"`
	// Extensions holds further members, marshalled at the top level of the
	// object. A key that names a standard member above is ignored when
	// marshalling. Unmarshalled values have encoding/json's types for any
	// (float64 for numbers, map[string]any for objects).
	Extensions map[string]any `json:"-"`
}

// New returns the Details for status with the given detail, titled with
// the status text.
func New(status int, detail string) Details {
	return Details{Title: http.StatusText(status), Status: status, Detail: detail}
}

// standard is Details without its methods, for encoding/json to handle.
type standard struct {
	Type     string `json:"type,omitempty"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

func isStandard(key string) bool {
	switch key {
	case "type", "title", "status", "detail", "instance":
		return true
	}
	return false
}

// MarshalJSON writes the standard members in a fixed order, then the
// extension members sorted by key.
func (d Details) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(standard{d.Type, d.Title, d.Status, d.Detail, d.Instance})
	if err != nil || len(d.Extensions) == 0 {
		return b, err
	}
	b = b[:len(b)-1] // drop the closing brace
	for _, k := range slices.Sorted(maps.Keys(d.Extensions)) {
		if isStandard(k) {
			continue
		}
		key, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(d.Extensions[k])
		if err != nil {
			return nil, err
		}
		b = append(b, ',')
		b = append(b, key...)
		b = append(b, ':')
		b = append(b, val...)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads a problem details object. Members it does not know go
// to Extensions. As RFC 9457 section 3.1 requires, a standard member of the
// wrong JSON type is ignored rather than failing the whole object.
func (d *Details) UnmarshalJSON(data []byte) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(data, &members); err != nil {
		return err
	}
	if members == nil { // JSON null
		return nil
	}
	*d = Details{}
	for k, raw := range members {
		switch k {
		case "type":
			_ = json.Unmarshal(raw, &d.Type)
		case "title":
			_ = json.Unmarshal(raw, &d.Title)
		case "detail":
			_ = json.Unmarshal(raw, &d.Detail)
		case "instance":
			_ = json.Unmarshal(raw, &d.Instance)
		case "status":
			_ = json.Unmarshal(raw, &d.Status)
		default:
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return err
			}
			if d.Extensions == nil {
				d.Extensions = make(map[string]any)
			}
			d.Extensions[k] = v
		}
	}
	return nil
}

// Write sends d as the response: Content-Type application/problem+json,
// Cache-Control no-store, X-Content-Type-Options nosniff, and d.Status as
// the status code. A Status outside 400-599 is sent as 500; an empty Title
// becomes the status text. Extensions that cannot be marshalled are
// dropped rather than failing the response.
func Write(w http.ResponseWriter, d Details) {
	if d.Status < 400 || d.Status > 599 {
		d.Status = http.StatusInternalServerError
	}
	if d.Title == "" {
		d.Title = http.StatusText(d.Status)
	}
	body, err := json.Marshal(d)
	if err != nil {
		d.Extensions = nil
		body, _ = json.Marshal(d) // only strings and an int: cannot fail
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length") // one set for a body that was never sent
	w.WriteHeader(d.Status)
	_, _ = w.Write(append(body, '\n'))
}

// Read decodes the problem details in resp, reading at most MaxBodySize
// bytes of its body. It reports false when resp does not carry one: a
// Content-Type other than application/problem+json, or a body that is not
// a JSON object within the limit. When it reports false, resp.Body still
// yields the whole body from the start. When it reports true, the body has
// been consumed; the caller still closes it. A missing status member is
// filled from resp.StatusCode.
func Read(resp *http.Response) (Details, bool) {
	mediaType, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mediaType != ContentType || resp.Body == nil {
		return Details{}, false
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodySize+1))
	var d Details
	if err != nil || len(buf) > MaxBodySize || !isObject(buf) || json.Unmarshal(buf, &d) != nil {
		resp.Body = replayBody{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
		return Details{}, false
	}
	if d.Status == 0 {
		d.Status = resp.StatusCode
	}
	return d, true
}

func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// replayBody gives back the bytes Read took, then the rest of the body, and
// closes the original body.
type replayBody struct {
	io.Reader
	io.Closer
}

package request

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fast paths of this file must be indistinguishable from the
// reference they replace: these tests hold them to it.

type fastPathDoc struct {
	Name string         `json:"name"`
	N    int            `json:"n"`
	Tags []string       `json:"tags,omitempty"`
	Sub  map[string]any `json:"sub,omitempty"`
}

// jsonInputs covers what JSON.Unmarshal may meet: exact values, white
// space on either side, data after the value, every kind of failure, and
// a value too large for its decoder to be pooled. afterValue marks data
// after the value, which json.Unmarshal refuses before it stores anything
// and JSON.Unmarshal only once it stored the value.
var jsonInputs = []struct {
	name, data string
	afterValue bool
}{
	{"an object", `{"name":"ann","n":1}`, false},
	{"nested members", `{"name":"bo","tags":["a","b"],"sub":{"x":[1,{"y":null}]}}`, false},
	{"leading white space", " \n\t{\"name\":\"cy\"}", false},
	{"a trailing newline", "{\"name\":\"di\"}\n", false},
	{"trailing white space", "{\"name\":\"ed\"} \r\n\t ", false},
	{"trailing data", `{"name":"fa"} {}`, true},
	{"two values", `{"name":"gu"}{"name":"ha"}`, true},
	{"trailing garbage", `{"name":"io"}x`, true},
	{"a syntax error", `{"name" "x"}`, false},
	{"a syntax error late", `{"name":"jo","n":1,"tags":["a",]}`, false},
	{"truncated", `{"name":`, false},
	{"empty", ``, false},
	{"only white space", "  \n", false},
	{"an unknown field", `{"name":"ka","nmae":"x"}`, false},
	{"a wrong type", `{"name":7}`, false},
	{"a wrong type deep", `{"sub":{"x":1},"n":"one"}`, false},
	{"null", `null`, false},
	{"a number, not an object", `42`, false},
	{"a string, not an object", `"lu"`, false},
	{"invalid UTF-8", "{\"name\":\"\xff\xfe\"}", false},
	{"escapes", `{"name":"\u00e9\n\"q\""}`, false},
	{"a large value", `{"name":"` + strings.Repeat("m", maxPooledDecoderBytes+10) + `"}`, false},
}

func TestJSONUnmarshalMatchesReference(t *testing.T) {
	for _, strict := range []bool{false, true} {
		c := JSON{DisallowUnknownFields: strict}
		reference := func(data []byte, v any) error {
			if !strict {
				return json.Unmarshal(data, v)
			}
			return c.unmarshal(data, v)
		}
		// Three rounds, so that pooled decoders are reused after every
		// kind of input, failures included.
		for round := range 3 {
			for _, in := range jsonInputs {
				data := []byte(in.data)
				var got, want fastPathDoc
				gotErr, wantErr := c.Unmarshal(data, &got), reference(data, &want)
				sameValue := strict || !in.afterValue
				if sameValue {
					assert.Equal(t, want, got, "strict=%v round %d %s: the value", strict, round, in.name)
				}
				assertSameError(t, gotErr, wantErr, "strict=%v round %d %s", strict, round, in.name)

				var gotAny, wantAny any
				gotErr, wantErr = c.Unmarshal(data, &gotAny), reference(data, &wantAny)
				if sameValue {
					assert.Equal(t, wantAny, gotAny, "strict=%v round %d %s: into any", strict, round, in.name)
				}
				assertSameError(t, gotErr, wantErr, "strict=%v round %d %s: into any", strict, round, in.name)
			}
		}
	}
}

// assertSameError checks that got and want are the same error: the same
// text, and the same offset for a syntax error.
func assertSameError(t *testing.T, got, want error, msgAndArgs ...any) {
	t.Helper()
	if want == nil {
		assert.NoError(t, got, msgAndArgs...)
		return
	}
	require.Error(t, got, msgAndArgs...)
	assert.Equal(t, want.Error(), got.Error(), msgAndArgs...)
	var gs, ws *json.SyntaxError
	if errors.As(want, &ws) {
		require.ErrorAs(t, got, &gs, msgAndArgs...)
		assert.Equal(t, ws.Offset, gs.Offset, msgAndArgs...)
	}
}

// upper is a codec of another kind than JSON, for the paths that must
// fall back to Marshal.
type upper struct{}

func (upper) ContentType() string { return "text/upper" }
func (upper) Marshal(v any) ([]byte, error) {
	return []byte(strings.ToUpper(v.(string))), nil
}
func (upper) Unmarshal(data []byte, v any) error { *v.(*string) = string(data); return nil }

func TestEncodeMatchesMarshal(t *testing.T) {
	type withMarshaler struct {
		When json.RawMessage `json:"when"`
		Num  json.Number     `json:"num"`
	}
	values := []any{
		fastPathDoc{Name: "ann", N: 1, Tags: []string{"a"}, Sub: map[string]any{"z": 1, "a": []any{true, nil}}},
		"<script>&'\"</script>",
		"\u2028\u2029 é \xff",
		map[string]int{"b": 2, "a": 1},
		withMarshaler{When: json.RawMessage(` { "x" : 1 } `), Num: "12.5"},
		nil,
		[]byte("bytes"),
		func() {},             // unsupported type
		make(chan int),        // unsupported type
		map[bool]int{true: 1}, // unsupported key
	}
	for range 2 { // the second round reuses pooled encoders
		for _, v := range values {
			want, wantErr := json.Marshal(v)
			got, enc, gotErr := encode(JSON{}, v)
			if wantErr != nil {
				require.Error(t, gotErr, "%#v", v)
				assert.Equal(t, wantErr.Error(), gotErr.Error())
				assert.Nil(t, enc, "a failed encoding holds no encoder")
				continue
			}
			require.NoError(t, gotErr, "%#v", v)
			assert.Equal(t, string(want), string(got), "%#v", v)
			enc.release()
		}
	}

	got, enc, err := encode(upper{}, "hi")
	require.NoError(t, err)
	assert.Equal(t, "HI", string(got))
	assert.Nil(t, enc, "another codec's Marshal is used as it is")
	enc.release() // a nil encoder releases nothing
}

// TestNewRequestMatchesNewRequestWithContext checks the request of one
// attempt against the one http.NewRequestWithContext makes for the same
// URL and a bytes.Reader of the same body, on both of its paths.
func TestNewRequestMatchesNewRequestWithContext(t *testing.T) {
	bases := []struct {
		base      string
		wantPlain bool // the base URL is parsed once
	}{
		{"http://api.test", true},
		{"http://api.test:8080", true},
		{"http://api.test:", true},
		{"https://user:pw@api.test/v1", true},
		{"http://api.test/v1/", true},
		{"http://[::1]:9000/x", true},
		{"http://api.test/a%2Fb", false},
		{"http://api.test/?q=1", false},
		{"http://api.test/#frag", false},
		{"/relative", false},
		{"", false},
	}
	paths := []struct {
		path      string
		wantPlain bool
	}{
		{"/greetings", true},
		{"/greetings/g-1.x_y~z", true},
		{"/a:b@c;d=e,f+g&h$i", true},
		{"/", true},
		{"", false},
		{"greetings", false},
		{"/with space", false},
		{"/p?x=1&y=2", false},
		{"/p#frag", false},
		{"/es%2Fcaped", false},
		{"/(paren)*!'", false},
		{"/é", false},
		{"/ctl\x7f", false},
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "bad method"}
	bodies := [][]byte{nil, {}, []byte(`{"name":"ann"}`)}
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")

	for _, b := range bases {
		c := NewClient(b.base, nil)
		assert.Equal(t, b.wantPlain, c.baseURL != nil, "base %q", b.base)
		for _, p := range paths {
			for _, method := range methods {
				for _, body := range bodies {
					hdr := http.Header{"Accept": {"application/json"}}
					got, gotErr := c.newRequest(ctx, method, p.path, hdr, body)

					var rd io.Reader
					if body != nil {
						rd = bytes.NewReader(body)
					}
					want, wantErr := http.NewRequestWithContext(ctx, method, b.base+p.path, rd)
					desc := []any{"%s %q + %q, body %q", method, b.base, p.path, body}
					if wantErr != nil {
						require.Error(t, gotErr, desc...)
						assert.Equal(t, wantErr.Error(), gotErr.Error(), desc...)
						continue
					}
					require.NoError(t, gotErr, desc...)
					want.Header = hdr
					assert.Equal(t, b.wantPlain && p.wantPlain && method != "PROPFIND", c.plain(method, p.path), desc...)
					assertSameRequest(t, got, want, desc...)
				}
			}
		}
	}
}

func assertSameRequest(t *testing.T, got, want *http.Request, msgAndArgs ...any) {
	t.Helper()
	assert.Equal(t, want.Method, got.Method, msgAndArgs...)
	assert.Equal(t, *want.URL, *got.URL, msgAndArgs...)
	assert.Equal(t, want.URL.String(), got.URL.String(), msgAndArgs...)
	assert.Equal(t, want.Host, got.Host, msgAndArgs...)
	assert.Equal(t, want.Proto, got.Proto, msgAndArgs...)
	assert.Equal(t, want.ProtoMajor, got.ProtoMajor, msgAndArgs...)
	assert.Equal(t, want.ProtoMinor, got.ProtoMinor, msgAndArgs...)
	assert.Equal(t, want.Header, got.Header, msgAndArgs...)
	assert.Equal(t, want.ContentLength, got.ContentLength, msgAndArgs...)
	assert.Equal(t, want.Context(), got.Context(), msgAndArgs...)
	assert.Equal(t, want.Body == nil, got.Body == nil, msgAndArgs...)
	assert.Equal(t, want.Body == http.NoBody, got.Body == http.NoBody, msgAndArgs...)
	assert.Equal(t, want.GetBody == nil, got.GetBody == nil, msgAndArgs...)
	assert.Equal(t, readBody(t, want.Body), readBody(t, got.Body), msgAndArgs...)
	if want.GetBody != nil {
		for range 2 {
			wb, err := want.GetBody()
			require.NoError(t, err)
			gb, err := got.GetBody()
			require.NoError(t, err)
			assert.Equal(t, readBody(t, wb), readBody(t, gb), msgAndArgs...)
		}
	}
}

func readBody(t *testing.T, b io.ReadCloser) string {
	t.Helper()
	if b == nil {
		return ""
	}
	data, err := io.ReadAll(b)
	require.NoError(t, err)
	require.NoError(t, b.Close())
	return string(data)
}

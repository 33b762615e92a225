package problem_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/problem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNew(t *testing.T) {
	got := problem.New(http.StatusNotFound, "no job 42")
	assert.Equal(t, problem.Details{Title: "Not Found", Status: 404, Detail: "no job 42"}, got)
}

func TestWriteSetsHeadersAndStatus(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "999") // stale, from a handler that gave up
	problem.Write(rec, problem.New(http.StatusConflict, "already exists"))

	assert.Equal(t, http.StatusConflict, rec.Code)
	assert.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	assert.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
	assert.Empty(t, rec.Header().Get("Content-Length"))
}

func TestWriteBody(t *testing.T) {
	tests := []struct {
		name       string
		give       problem.Details
		wantStatus int
		wantBody   string
	}{
		{
			name:       "about:blank type is omitted",
			give:       problem.New(http.StatusNotFound, "no job 42"),
			wantStatus: 404,
			wantBody:   `{"title":"Not Found","status":404,"detail":"no job 42"}`,
		},
		{
			name:       "empty title becomes the status text",
			give:       problem.Details{Status: http.StatusTooManyRequests},
			wantStatus: 429,
			wantBody:   `{"title":"Too Many Requests","status":429}`,
		},
		{
			name: "all members, extensions sorted after the standard ones",
			give: problem.Details{
				Type:     "https://example.com/probs/out-of-credit",
				Title:    "You do not have enough credit.",
				Status:   http.StatusForbidden,
				Detail:   "Your current balance is 30, but that costs 50.",
				Instance: "/account/12345/msgs/abc",
				Extensions: map[string]any{
					"balance":  30,
					"accounts": []string{"/account/12345", "/account/67890"},
				},
			},
			wantStatus: 403,
			wantBody: `{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.",` +
				`"status":403,"detail":"Your current balance is 30, but that costs 50.","instance":"/account/12345/msgs/abc",` +
				`"accounts":["/account/12345","/account/67890"],"balance":30}`,
		},
		{
			name:       "extensions never override standard members",
			give:       problem.Details{Status: 400, Extensions: map[string]any{"status": 200, "title": "x", "field": "name"}},
			wantStatus: 400,
			wantBody:   `{"title":"Bad Request","status":400,"field":"name"}`,
		},
		{
			name:       "unmarshallable extensions are dropped",
			give:       problem.Details{Status: 400, Extensions: map[string]any{"bad": make(chan int)}},
			wantStatus: 400,
			wantBody:   `{"title":"Bad Request","status":400}`,
		},
		{
			name:       "zero status is sent as 500",
			give:       problem.Details{Detail: "oops"},
			wantStatus: 500,
			wantBody:   `{"title":"Internal Server Error","status":500,"detail":"oops"}`,
		},
		{
			name:       "non-error status is sent as 500",
			give:       problem.Details{Title: "Fine", Status: 200},
			wantStatus: 500,
			wantBody:   `{"title":"Fine","status":500}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			problem.Write(rec, tt.give)
			assert.Equal(t, tt.wantStatus, rec.Code)
			assert.JSONEq(t, tt.wantBody, rec.Body.String())
			assert.Equal(t, tt.wantBody+"\n", rec.Body.String(), "member order")
		})
	}
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		name string
		give string
		want problem.Details
	}{
		{
			name: "standard members",
			give: `{"type":"urn:x","title":"T","status":409,"detail":"D","instance":"/i"}`,
			want: problem.Details{Type: "urn:x", Title: "T", Status: 409, Detail: "D", Instance: "/i"},
		},
		{
			name: "unknown members become extensions",
			give: `{"title":"T","status":400,"errors":[{"field":"name"}],"retry":true,"n":1.5,"nothing":null}`,
			want: problem.Details{Title: "T", Status: 400, Extensions: map[string]any{
				"errors":  []any{map[string]any{"field": "name"}},
				"retry":   true,
				"n":       1.5,
				"nothing": nil,
			}},
		},
		{
			name: "standard members of the wrong type are ignored",
			give: `{"type":7,"title":["x"],"status":"404","detail":false,"instance":{}}`,
			want: problem.Details{},
		},
		{
			name: "empty object",
			give: `{}`,
			want: problem.Details{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := problem.Details{Title: "stale", Extensions: map[string]any{"stale": 1}}
			require.NoError(t, json.Unmarshal([]byte(tt.give), &d), "input %s", tt.give)
			assert.Equal(t, tt.want, d, "input %s", tt.give)
		})
	}
}

func TestUnmarshalRejectsNonObjects(t *testing.T) {
	for _, give := range []string{`[]`, `"x"`, `42`, `{`, ``} {
		var d problem.Details
		assert.Error(t, json.Unmarshal([]byte(give), &d), "input %q", give)
	}
}

func TestExtensionsRoundTrip(t *testing.T) {
	give := problem.Details{
		Type:   "https://example.com/probs/validation",
		Title:  "Invalid request",
		Status: 422,
		Extensions: map[string]any{
			"errors": []any{map[string]any{"field": "email", "reason": "missing"}},
			"count":  float64(1),
			"trace":  "abc",
		},
	}
	b, err := json.Marshal(give)
	require.NoError(t, err)
	var got problem.Details
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, give, got, "through %s", b)
}

func serve(t *testing.T, h http.HandlerFunc) *http.Response {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestReadOverHTTP(t *testing.T) {
	give := problem.Details{
		Type:       "https://example.com/probs/out-of-credit",
		Title:      "You do not have enough credit.",
		Status:     http.StatusForbidden,
		Detail:     "Your current balance is 30, but that costs 50.",
		Instance:   "/account/12345/msgs/abc",
		Extensions: map[string]any{"balance": float64(30)},
	}
	resp := serve(t, func(w http.ResponseWriter, _ *http.Request) { problem.Write(w, give) })

	got, ok := problem.Read(resp)
	require.True(t, ok)
	assert.Equal(t, give, got)
}

func TestReadFillsAMissingStatusFromTheResponse(t *testing.T) {
	resp := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, `{"title":"upstream down"}`)
	})
	got, ok := problem.Read(resp)
	require.True(t, ok)
	assert.Equal(t, problem.Details{Title: "upstream down", Status: 502}, got)
}

func TestReadReportsFalseAndKeepsTheBody(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
	}{
		{"plain text error", "text/plain; charset=utf-8", "boom\n"},
		{"plain JSON", "application/json", `{"title":"not a problem"}`},
		{"no content type", "", `{"title":"x"}`},
		{"malformed content type", "application/problem+json; =", `{"title":"x"}`},
		{"problem type but not JSON", "application/problem+json", "<html>502</html>"},
		{"problem type but a JSON array", "application/problem+json", `[1,2]`},
		{"problem type but truncated JSON", "application/problem+json", `{"title":`},
		{"problem type but over the size limit", "application/problem+json",
			`{"title":"big","pad":"` + strings.Repeat("x", problem.MaxBodySize) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := serve(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header()["Content-Type"] = []string{tt.contentType}
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(w, tt.body)
			})
			got, ok := problem.Read(resp)
			assert.False(t, ok)
			assert.Zero(t, got)
			rest, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, tt.body, string(rest), "the body is still readable from the start")
		})
	}
}

type failingBody struct {
	r      io.Reader
	closed bool
}

func (b *failingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}

func (b *failingBody) Close() error { b.closed = true; return nil }

func TestReadOnABrokenBodyReportsFalseAndCloseStillCloses(t *testing.T) {
	body := &failingBody{r: strings.NewReader(`{"title":"x"}`)}
	resp := &http.Response{
		StatusCode: 500,
		Header:     http.Header{"Content-Type": {problem.ContentType}},
		Body:       body,
	}
	_, ok := problem.Read(resp)
	assert.False(t, ok)
	require.NoError(t, resp.Body.Close())
	assert.True(t, body.closed)
}

func TestReadWithoutBody(t *testing.T) {
	resp := &http.Response{StatusCode: 500, Header: http.Header{"Content-Type": {problem.ContentType}}}
	_, ok := problem.Read(resp)
	assert.False(t, ok)
}

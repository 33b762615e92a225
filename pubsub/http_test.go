package pubsub_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/pubsub"
)

type teapot struct{}

func (teapot) Error() string   { return "short and stout" }
func (teapot) HTTPStatus() int { return http.StatusTeapot }

func newPublishServer(t *testing.T, b pubsub.Publisher, opts ...pubsub.HandlerOption) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/publish/{topic}", pubsub.NewPublishHandler(b, func(r *http.Request) (string, error) {
		switch r.Header.Get("X-Test-Auth") {
		case "none":
			return "", pubsub.ErrUnauthorized
		case "deny":
			return "", pubsub.ErrForbidden
		case "secret":
			return "", errors.New("database password is hunter2")
		case "teapot":
			return "", teapot{}
		}
		return r.PathValue("topic"), nil
	}, opts...))
	mux.Handle("/empty", pubsub.NewPublishHandler(b, func(*http.Request) (string, error) { return "", nil }))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestPublishHandlerRefusals(t *testing.T) {
	b := pubsub.NewBroker()
	defer b.Close()
	srv := newPublishServer(t, b, pubsub.MaxBodySize(16))

	tests := []struct {
		name       string
		method     string
		path       string
		auth       string
		body       io.Reader
		wantStatus int
		wantDetail string
	}{
		{name: "wrong method", method: http.MethodGet, path: "/publish/a.b", wantStatus: 405},
		{name: "no topic", method: http.MethodPost, path: "/empty", body: strings.NewReader("x"), wantStatus: 400, wantDetail: "no topic"},
		{name: "wildcard topic", method: http.MethodPost, path: "/publish/a.*", body: strings.NewReader("x"), wantStatus: 400, wantDetail: "wildcard"},
		{name: "empty token", method: http.MethodPost, path: "/publish/a..b", body: strings.NewReader("x"), wantStatus: 400, wantDetail: "empty token"},
		{name: "body too large", method: http.MethodPost, path: "/publish/a.b", body: strings.NewReader(strings.Repeat("x", 17)), wantStatus: 413},
		{name: "chunked body too large", method: http.MethodPost, path: "/publish/a.b", body: io.MultiReader(strings.NewReader(strings.Repeat("x", 17))), wantStatus: 413},
		{name: "unauthenticated", method: http.MethodPost, path: "/publish/a.b", auth: "none", body: strings.NewReader("x"), wantStatus: 401},
		{name: "forbidden", method: http.MethodPost, path: "/publish/a.b", auth: "deny", body: strings.NewReader("x"), wantStatus: 403},
		{name: "hook error text is not leaked", method: http.MethodPost, path: "/publish/a.b", auth: "secret", body: strings.NewReader("x"), wantStatus: 403, wantDetail: "not allowed"},
		{name: "hook chooses status", method: http.MethodPost, path: "/publish/a.b", auth: "teapot", body: strings.NewReader("x"), wantStatus: 418},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, tt.body)
			require.NoError(t, err)
			if tt.auth != "" {
				req.Header.Set("X-Test-Auth", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			var p struct {
				Title  string `json:"title"`
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
			assert.Equal(t, tt.wantStatus, p.Status)
			assert.NotEmpty(t, p.Title)
			assert.Contains(t, p.Detail, tt.wantDetail)
			assert.NotContains(t, p.Detail, "hunter2")
		})
	}
	assert.Zero(t, b.Stats().Published, "no refused request may publish")
}

func TestPublishHandlerPublishes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := pubsub.NewBroker()
	defer b.Close()
	sub, err := b.Subscribe(ctx, "orders.>")
	require.NoError(t, err)
	defer sub.Close()
	srv := newPublishServer(t, b)

	resp, err := http.Post(srv.URL+"/publish/orders.eu", "text/plain", strings.NewReader("hello"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got pubsub.PublishResult
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))

	m, err := sub.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "orders.eu", m.Topic)
	assert.Equal(t, "hello", string(m.Data))
	assert.Equal(t, "text/plain", m.Header["Content-Type"])
	assert.Equal(t, pubsub.PublishResult{Topic: "orders.eu", Cursor: m.Cursor}, got)
}

func TestPublishHandlerClosedBroker(t *testing.T) {
	b := pubsub.NewBroker()
	srv := newPublishServer(t, b)
	b.Close()
	resp, err := http.Post(srv.URL+"/publish/a.b", "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

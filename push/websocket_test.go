package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

// serve mounts a hub's WebSocket handler on an httptest server.
func serve(t *testing.T, h *push.Hub, opts ...push.HandlerOption) (wsURL string, srv *httptest.Server) {
	t.Helper()
	srv = httptest.NewServer(push.NewHandler(h, opts...))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), srv
}

func TestWebSocketRefusalsAreProblemDetails(t *testing.T) {
	authErr := func(r *http.Request) (string, error) {
		switch r.Header.Get("Authorization") {
		case "":
			return "", pubsub.ErrUnauthorized
		case "Bearer ann":
			return "ann", nil
		}
		return "", pubsub.ErrForbidden
	}
	tests := []struct {
		name   string
		method string
		header map[string]string
		want   int
	}{
		{"POST", http.MethodPost, nil, http.StatusMethodNotAllowed},
		{"plain GET", http.MethodGet, map[string]string{"Authorization": "Bearer ann"}, http.StatusUpgradeRequired},
		{"foreign origin", http.MethodGet, map[string]string{"Origin": "https://evil.example", "Authorization": "Bearer ann"}, http.StatusForbidden},
		{"no credentials", http.MethodGet, nil, http.StatusUnauthorized},
		{"wrong credentials", http.MethodGet, map[string]string{"Authorization": "Bearer eve"}, http.StatusForbidden},
	}
	h, _ := newHub(t)
	_, srv := serve(t, h, push.Authenticate(authErr))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL, nil)
			if tt.name != "plain GET" && tt.method == http.MethodGet {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var d struct {
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != "application/problem+json" ||
				json.NewDecoder(resp.Body).Decode(&d) != nil || d.Status != tt.want {
				t.Errorf("got %d %s %+v, want %d problem details", resp.StatusCode, resp.Header.Get("Content-Type"), d, tt.want)
			}
		})
	}
}

func TestWebSocketOriginPatterns(t *testing.T) {
	tests := []struct {
		name, origin string
		ok           bool
	}{
		{"no origin (not a browser)", "", true},
		{"same host", "SAME", true},
		{"allowed pattern", "https://app.example.com", true},
		{"foreign", "https://example.org", false},
	}
	h, _ := newHub(t)
	wsURL, srv := serve(t, h, push.OriginPatterns("*.example.com"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			hdr := http.Header{}
			switch tt.origin {
			case "":
			case "SAME":
				hdr.Set("Origin", srv.URL)
			default:
				hdr.Set("Origin", tt.origin)
			}
			c, err := push.Dial(ctx, wsURL, push.WithHeader(hdr))
			var de *push.DialError
			switch {
			case tt.ok && err != nil:
				t.Fatalf("Dial = %v, want a connection", err)
			case tt.ok:
				c.Close(push.StatusNormalClosure, "")
			case !errors.As(err, &de) || de.Status != http.StatusForbidden || !strings.Contains(de.Detail, "not allowed"):
				t.Fatalf("Dial = %v, want a 403 DialError", err)
			}
		})
	}
}

func TestWebSocketClientEndToEnd(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t, push.OnMessage(func(_ context.Context, r *push.Request) ([]byte, error) {
		return []byte(`"pong"`), nil
	}))
	wsURL, _ := serve(t, h, push.Authenticate(func(*http.Request) (string, error) { return "ann", nil }))
	c, err := push.Connect(ctx, wsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "news", ""); err != nil {
		t.Fatal(err)
	}
	cur := publish(t, h, "news", "extra")
	if m := next(t, ctx, c); m.Sub != "news" || m.Cursor != cur || string(m.Data) != "extra" {
		t.Fatalf("got %+v", m)
	}
	if got, err := c.Request(ctx, []byte("ping")); err != nil || string(got) != `"pong"` {
		t.Fatalf("Request = %q, %v", got, err)
	}
	if err := h.SendUser(ctx, "ann", []byte("for ann")); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, c); string(m.Data) != "for ann" {
		t.Fatalf("got %+v", m)
	}
}

func TestWebSocketCloseCodes(t *testing.T) {
	tests := []struct {
		name string
		opts []push.Option
		do   func(ctx context.Context, h *push.Hub, c push.Conn) error
		want push.StatusCode
	}{
		{"read limit", []push.Option{push.ReadLimit(32)}, func(ctx context.Context, _ *push.Hub, c push.Conn) error {
			return c.Write(ctx, []byte(`{"type":"send","text":"`+strings.Repeat("x", 64)+`"}`))
		}, push.StatusMessageTooBig},
		{"malformed frame", nil, func(ctx context.Context, _ *push.Hub, c push.Conn) error {
			return c.Write(ctx, []byte("hello?"))
		}, push.StatusInvalidData},
		{"shutdown", nil, func(ctx context.Context, h *push.Hub, _ push.Conn) error {
			go h.Shutdown(ctx)
			return nil
		}, push.StatusGoingAway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			h, _ := newHub(t, tt.opts...)
			wsURL, _ := serve(t, h)
			c, err := push.Dial(ctx, wsURL)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(push.StatusNormalClosure, "")
			if _, err := c.Read(ctx); err != nil { // the welcome
				t.Fatal(err)
			}
			if err := tt.do(ctx, h, c); err != nil {
				t.Fatal(err)
			}
			for {
				if _, err = c.Read(ctx); err != nil {
					break
				}
			}
			if got := push.CloseStatus(err); got != tt.want {
				t.Errorf("closed with %d (%v), want %d", got, err, tt.want)
			}
		})
	}
}

func TestWebSocketConnectionLimitCloseCode(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t, push.MaxConnsPerUser(1))
	wsURL, _ := serve(t, h, push.Authenticate(func(*http.Request) (string, error) { return "ann", nil }))
	first, err := push.Dial(ctx, wsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(push.StatusNormalClosure, "")
	if _, err := first.Read(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := push.Dial(ctx, wsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(push.StatusNormalClosure, "")
	_, err = second.Read(ctx)
	if got := push.CloseStatus(err); got != push.StatusUserLimit {
		t.Errorf("second connection: %v, want close code %d", err, push.StatusUserLimit)
	}
}

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunServesThenShutsDown starts the command's run on memory, checks a
// few HTTP contracts the page relies on, and shuts it down by its context.
func TestRunServesThenShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{addr: "127.0.0.1:0"}, func(a net.Addr, engine string) {
			if engine != "memory" {
				t.Errorf("engine %q, want memory", engine)
			}
			addr <- a.String()
		})
	}()
	var base string
	select {
	case base = <-addr:
		base = "http://" + base
	case err := <-done:
		t.Fatalf("run: %v", err)
	}

	tests := []struct {
		name, method, path, ctype, body string
		wantStatus                      int
		wantType                        string
		wantBody                        string
	}{
		{"the page", "GET", "/", "", "", 200, "text/html; charset=utf-8", "switchboard showcase"},
		{"a valid booking", "POST", "/api/bookings", "application/json", `{"name":"ann","room":"atlas","minutes":30}`, 201, "application/json", `"room":"atlas"`},
		{"a bad booking lists its fields", "POST", "/api/bookings", "application/json", `{"name":"","room":"attic","minutes":7}`, 422, "application/problem+json", `"field":"minutes"`},
		{"a malformed booking", "POST", "/api/bookings", "application/json", `{"name":`, 400, "application/problem+json", `"status":400`},
		{"a job with bad steps", "POST", "/jobs?steps=0", "", "", 400, "application/problem+json", "steps must be"},
		{"a job", "POST", "/jobs?steps=1", "", "", 202, "application/json", `"status":"pending"`},
		{"a bad subject", "POST", "/publish/orders..eu", "text/plain", "x", 400, "application/problem+json", `"status":400`},
		{"a publish", "POST", "/publish/orders.eu.created", "text/plain", "x", 200, "application/json", `"topic":"shop.orders.eu.created"`},
		{"queue stats", "GET", "/queues/work", "", "", 200, "application/json", `"depth":0`},
		{"another queue", "GET", "/queues/other", "", "", 404, "application/problem+json", `"status":404`},
		{"a socket with a bad name", "GET", "/ws?name=a%20b", "", "", 400, "application/problem+json", "must be 1 to 32"},
		{"the feed from now", "GET", "/updates?wait=0", "", "", 200, "application/json", `"cursor":`},
		{"a bad wait", "GET", "/updates?wait=soon", "", "", 400, "application/problem+json", "wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tt.path, "/ws") { // a WebSocket handshake
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body := new(strings.Builder)
			_, _ = io.Copy(body, resp.Body)
			if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.wantType) || !strings.Contains(body.String(), tt.wantBody) {
				t.Errorf("%s %s: got %d %q %s; want %d %q containing %q", tt.method, tt.path,
					resp.StatusCode, resp.Header.Get("Content-Type"), clip(body.String(), 300), tt.wantStatus, tt.wantType, tt.wantBody)
			}
		})
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after its context ended: %v", err)
	}
}

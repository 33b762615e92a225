package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/request"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
}

var clientOutput = []string{
	"created 1: hello, ann",
	"got 1: hello, ann",
	`missing: not found=true (request: not_found: no greeting "999999")`,
	"invalid: invalid_argument 400 [{name is required}]",
}

// TestServeAndCall runs the server and the -call client against it over
// loopback.
func TestServeAndCall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	var srvOut syncWriter
	done := make(chan error, 1)
	go func() { done <- serve(srvCtx, ln, &srvOut) }()

	tr := &http.Transport{}
	var out bytes.Buffer
	callErr := runClient(ctx, "http://"+ln.Addr().String(), &http.Client{Transport: tr}, &out)
	tr.CloseIdleConnections()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if callErr != nil {
		t.Fatal(callErr)
	}
	wantLines(t, out.String(), clientOutput...)
	wantLines(t, srvOut.String(), "status=201", "status=404")
}

// TestInMemory runs the client against the handler with no network.
func TestInMemory(t *testing.T) {
	var out, logs bytes.Buffer
	h := handler(slogTo(&logs))
	if err := runClient(context.Background(), "http://greeter", request.InMemory{Handler: h}, &out); err != nil {
		t.Fatal(err)
	}
	wantLines(t, out.String(), clientOutput...)
}

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/push"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs the example on a free port and returns its address. run's
// result is checked when the test ends.
func start(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, "127.0.0.1:0", func(a net.Addr) { addrs <- a }) }()
	select {
	case a := <-addrs:
		addr = a.String()
	case err := <-done:
		cancel()
		t.Fatalf("run ended before listening: %v", err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v, want nil", err)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

func TestPage(t *testing.T) {
	addr, _ := start(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
	for _, want := range []string{"new WebSocket(", `type: "subscribe"`, "after: lastCursor", `type: "send"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// TestChat: what one client says reaches the other through the room; a
// publish over HTTP too; shutdown closes the clients with "going away".
func TestChat(t *testing.T) {
	addr, stop := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ws := "ws://" + addr + "/ws"
	ann, err := push.Connect(ctx, ws+"?name=ann", push.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	defer ann.Close()
	bob, err := push.Connect(ctx, ws+"?name=bob", push.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	for _, c := range []*push.Client{ann, bob} {
		if err := c.Subscribe(ctx, Room, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ann.Request(ctx, []byte("hi bob")); err != nil {
		t.Fatal(err)
	}
	if m, err := bob.Next(ctx); err != nil || string(m.Data) != "hi bob" {
		t.Fatalf("bob got %q, %v", m.Data, err)
	}
	resp, err := hc.Post("http://"+addr+"/publish/"+Room, "text/plain", strings.NewReader("from curl"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, want := range []string{"hi bob", "from curl"} {
		if m, err := ann.Next(ctx); err != nil || string(m.Data) != want {
			t.Fatalf("ann got %q, %v; want %q", m.Data, err, want)
		}
	}
	if m, err := bob.Next(ctx); err != nil || string(m.Data) != "from curl" {
		t.Fatalf("bob got %q, %v", m.Data, err)
	}
	stop()
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

// dropper wraps the WebSocket handler so the test can drop the page's
// connection (by canceling the request's context, which ends the hub's
// Serve without a close handshake, as a network failure would) and hold
// the page's next connection until the test lets it through.
type dropper struct {
	h http.Handler

	mu       sync.Mutex
	cancel   context.CancelFunc // ends the current connection; guarded by mu
	returned chan struct{}      // closed when its handler returns; guarded by mu
	gate     chan struct{}      // when not nil, connections wait for it; guarded by mu
}

func (d *dropper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	gate := d.gate
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	returned := make(chan struct{})
	defer close(returned)
	d.mu.Lock()
	d.cancel, d.returned = cancel, returned
	d.mu.Unlock()
	d.h.ServeHTTP(w, r.WithContext(ctx))
}

// drop ends the connection in flight and holds the next one until release.
func (d *dropper) drop(t *testing.T, ctx context.Context) (release func()) {
	t.Helper()
	d.mu.Lock()
	cancel, returned := d.cancel, d.returned
	gate := make(chan struct{})
	d.gate = gate
	d.mu.Unlock()
	cancel()
	select {
	case <-returned:
	case <-ctx.Done():
		t.Fatal("the connection's handler did not return")
	}
	return func() {
		d.mu.Lock()
		d.gate = nil
		d.mu.Unlock()
		close(gate)
	}
}

func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium or chromium-browser in PATH; CI must have one (apt-get install chromium)")
	}
	t.Skip("no chromium or chromium-browser in PATH: install Chromium to run the browser test")
	return ""
}

// TestBrowserChat drives the example page in headless Chromium: it
// subscribes, receives published messages in order, says something that
// reaches another connection, and after the server drops it, reconnects and
// receives exactly what it missed.
func TestBrowserChat(t *testing.T) {
	browserPath := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()
	hub, err := newHub(broker)
	if err != nil {
		t.Fatal(err)
	}
	ws := &dropper{h: push.NewHandler(hub, push.Authenticate(user))}
	srv := httptest.NewServer(routes(broker, ws))
	defer srv.Close()
	defer func() {
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()

	// Another participant, a Go client, hears what the page says.
	other, err := push.Connect(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?name=go")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Subscribe(ctx, Room, ""); err != nil {
		t.Fatal(err)
	}

	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browserPath),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer allocCancel()
	browserCtx, browserCancel := chromedp.NewContext(allocCtx)
	defer browserCancel()

	if resp, err := chromedp.Run(browserCtx, chromedp.NavigateResponse(srv.URL+"/?name=page")); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("loading the page: %v (response %+v)", err, resp)
	}
	// Wait for the socket; the page subscribes as soon as it opens.
	waitFor(t, browserCtx, "window.opens >= 1")
	var published []string
	publishBurst := func(b int) {
		t.Helper()
		for i := range 5 {
			data := fmt.Sprintf("burst %d line %d", b, i)
			if _, err := hub.Publish(ctx, Room, []byte(data)); err != nil {
				t.Fatal(err)
			}
			published = append(published, data)
		}
	}
	// The page says hello: the reply to its request comes after the reply
	// to its subscribe, so from then on it is subscribed.
	if _, err := chromedp.Run(browserCtx, chromedp.Evaluate[map[string]any](`window.say("hello from the page")`,
		chromedp.EvalAsValue, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("say: %v", err)
	}
	published = append(published, "hello from the page")
	if m, err := other.Next(ctx); err != nil || string(m.Data) != "hello from the page" {
		t.Fatalf("the other connection got %q, %v; want the page's message", m.Data, err)
	}

	publishBurst(0)
	waitFor(t, browserCtx, fmt.Sprintf("window.got.length >= %d", len(published)))

	release := ws.drop(t, ctx)
	publishBurst(1) // while the page is away
	release()
	waitFor(t, browserCtx, "window.opens >= 2")
	publishBurst(2)
	waitFor(t, browserCtx, fmt.Sprintf("window.got.length >= %d", len(published)))

	got, err := chromedp.Run(browserCtx, chromedp.Evaluate[[]string]("window.got"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, published) {
		t.Errorf("the page received\n%q\nwant exactly (in order, no duplicate)\n%q", got, published)
	}
	if err := chromedp.Cancel(browserCtx); err != nil {
		t.Errorf("closing the browser: %v", err)
	}
}

func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(10*time.Millisecond),
		chromedp.WithPollingTimeout(20*time.Second),
	)); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}

package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/sse"
)

// browserPage is what the headless browser loads: an EventSource on
// /events that appends each event's data to window.got (and to a list on
// the page) and counts the times the stream opened.
const browserPage = `<!doctype html>
<meta charset="utf-8">
<title>sse browser test</title>
<ul id="list"></ul>
<script>
window.got = [];
window.opens = 0;
const es = new EventSource("/events");
es.onopen = () => { window.opens++; };
es.onmessage = (e) => {
  window.got.push(e.data);
  const li = document.createElement("li");
  li.textContent = e.data;
  document.getElementById("list").appendChild(li);
};
</script>
`

// streamCutter wraps the events handler so the test can end the stream in
// flight (by canceling the request's context, which the sse Handler
// watches) and hold the browser's next request until the test lets it
// through. It records the Last-Event-ID header of every request.
type streamCutter struct {
	h http.Handler

	mu       sync.Mutex
	lastIDs  []string           // Last-Event-ID of each request, in order; guarded by mu
	cancel   context.CancelFunc // ends the current stream; guarded by mu
	returned chan struct{}      // closed when the current stream's handler returns; guarded by mu
	gate     chan struct{}      // when not nil, requests wait until it is closed; guarded by mu
}

func (c *streamCutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.lastIDs = append(c.lastIDs, r.Header.Get("Last-Event-ID"))
	gate := c.gate
	c.mu.Unlock()
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
	c.mu.Lock()
	c.cancel, c.returned = cancel, returned
	c.mu.Unlock()
	c.h.ServeHTTP(w, r.WithContext(ctx))
}

// cut ends the stream in flight, waits until its handler has returned, and
// holds the next request until release is called.
func (c *streamCutter) cut(t *testing.T, ctx context.Context) (release func()) {
	t.Helper()
	c.mu.Lock()
	cancel, returned := c.cancel, c.returned
	gate := make(chan struct{})
	c.gate = gate
	c.mu.Unlock()
	if cancel == nil {
		t.Fatal("no stream to cut")
	}
	cancel()
	select {
	case <-returned:
	case <-ctx.Done():
		t.Fatal("the stream's handler did not return after its context was canceled")
	}
	return func() {
		c.mu.Lock()
		c.gate = nil
		c.mu.Unlock()
		close(gate)
	}
}

func (c *streamCutter) requests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lastIDs)
}

// chromium finds the browser, skipping the test when there is none (but
// failing under CI=true, where a skip would hide that nothing ran).
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

// TestBrowserEventSourceResumes checks the handler against a real
// EventSource: headless Chromium reads a stream, the server cuts it
// midway, and the browser reconnects by itself with Last-Event-ID and
// receives every event exactly once, in order, including those published
// while it was away.
func TestBrowserEventSourceResumes(t *testing.T) {
	browserPath := chromium(t)

	const bursts, perBurst = 3, 10
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	broker := pubsub.NewBroker(pubsub.History(100, time.Hour))
	defer broker.Close()
	events := sse.NewHandler(broker,
		func(*http.Request) (string, error) { return "feed", nil },
		sse.Retry(50*time.Millisecond))
	cutter := &streamCutter{h: events}
	mux := http.NewServeMux()
	mux.Handle("GET /events", cutter)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, browserPage)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	// Deferred calls run last first: the browser closes, then the streams
	// end, then the server and the broker close.
	defer func() {
		if err := events.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()

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

	// Wait for the page's EventSource to be open: the handler subscribes
	// before it answers, so from then on nothing published is missed.
	if resp, err := chromedp.Run(browserCtx, chromedp.NavigateResponse(srv.URL+"/")); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("loading the page: %v (response %+v)", err, resp)
	}
	waitFor(t, browserCtx, "window.opens >= 1")

	var published []string
	var cursors []pubsub.Cursor
	publishBurst := func(b int) {
		t.Helper()
		for i := range perBurst {
			data := fmt.Sprintf("burst %d event %d", b, i)
			c, err := broker.Publish(ctx, pubsub.Message{Topic: "feed", Data: []byte(data)})
			if err != nil {
				t.Fatal(err)
			}
			published = append(published, data)
			cursors = append(cursors, c)
		}
	}

	// Burst 0 arrives live.
	publishBurst(0)
	waitFor(t, browserCtx, fmt.Sprintf("window.got.length >= %d", len(published)))

	// Cut the stream, and publish burst 1 while the browser is away: its
	// reconnection is held until the burst is in the broker's history.
	release := cutter.cut(t, ctx)
	publishBurst(1)
	release()
	waitFor(t, browserCtx, fmt.Sprintf("window.got.length >= %d", len(published)))

	// Burst 2 arrives live on the resumed stream.
	publishBurst(2)
	waitFor(t, browserCtx, fmt.Sprintf("window.got.length >= %d", len(published)))

	got, err := chromedp.Run(browserCtx, chromedp.Evaluate[[]string]("window.got"))
	if err != nil {
		t.Fatal(err)
	}
	opens, err := chromedp.Run(browserCtx, chromedp.Evaluate[int]("window.opens"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, published) {
		t.Errorf("the page received\n%q\nwant exactly (in order, no duplicate)\n%q", got, published)
	}
	if opens != 2 {
		t.Errorf("the EventSource opened %d times, want 2 (one reconnection)", opens)
	}
	// The browser's second request resumed after the last event of burst 0.
	wantIDs := []string{"", string(cursors[perBurst-1])}
	if reqs := cutter.requests(); !slices.Equal(reqs, wantIDs) {
		t.Errorf("requests carried Last-Event-ID %q, want %q", reqs, wantIDs)
	}

	// Close the browser (and wait for its process to exit) before the
	// server, which waits for the browser's connections to end.
	if err := chromedp.Cancel(browserCtx); err != nil {
		t.Errorf("closing the browser: %v", err)
	}
}

// waitFor polls the page until expr is true, failing the test after a
// generous deadline (the test's context bounds it too).
func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(10*time.Millisecond),
		chromedp.WithPollingTimeout(15*time.Second),
	)); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}

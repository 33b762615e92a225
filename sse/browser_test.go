package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-go/switchboard/internal/browsertest"
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

// TestBrowserEventSourceResumes checks the handler against a real
// EventSource: headless Chromium reads a stream, the server cuts it
// midway, and the browser reconnects by itself with Last-Event-ID and
// receives every event exactly once, in order, including those published
// while it was away.
func TestBrowserEventSourceResumes(t *testing.T) {

	const bursts, perBurst = 3, 10
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	broker := pubsub.NewBroker(pubsub.History(100, time.Hour))
	defer broker.Close()
	events := sse.NewHandler(broker,
		func(*http.Request) (string, error) { return "feed", nil },
		sse.Retry(50*time.Millisecond))
	cutter := &browsertest.Cutter{Handler: events}
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

	allocCtx, allocCancel := browsertest.Allocator(ctx, t)
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
	release := cutter.Cut(t, ctx)
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
	if reqs := cutter.Header("Last-Event-ID"); !slices.Equal(reqs, wantIDs) {
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

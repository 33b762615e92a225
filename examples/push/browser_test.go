package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-go/switchboard/internal/browsertest"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

// TestBrowserChat drives the example page in headless Chromium: it
// subscribes, receives published messages in order, says something that
// reaches another connection, and after the server drops it, reconnects and
// receives exactly what it missed.
func TestBrowserChat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()
	hub, err := newHub(broker)
	if err != nil {
		t.Fatal(err)
	}
	ws := &browsertest.Cutter{Handler: push.NewHandler(hub, push.Authenticate(user))}
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

	allocCtx, allocCancel := browsertest.Allocator(ctx, t)
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

	release := ws.Cut(t, ctx)
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

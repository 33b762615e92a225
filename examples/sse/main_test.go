package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs the example on a free port and returns its base URL. The
// server is shut down, and run's result checked, when the test ends.
func start(t *testing.T) (base string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, "127.0.0.1:0", func(a net.Addr) { addrs <- a }) }()
	select {
	case a := <-addrs:
		base = "http://" + a.String()
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
	return base, stop
}

func testClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func publish(t *testing.T, hc *http.Client, base, topic, body string) pubsub.Cursor {
	t.Helper()
	resp, err := hc.Post(base+"/publish/"+topic, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("publish to %s: status %d %s, want 200", topic, resp.StatusCode, b)
	}
	var res pubsub.PublishResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return res.Cursor
}

func TestPage(t *testing.T) {
	base, _ := start(t)
	resp, err := testClient(t).Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %q, want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"new EventSource(", `addEventListener("gap"`, "lastEventId", "/publish/"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// TestResumeAndLive publishes, then connects after the first cursor over a
// wildcard pattern: the stream replays exactly what followed it, then goes
// on live.
func TestResumeAndLive(t *testing.T) {
	base, _ := start(t)
	hc := testClient(t)
	c1 := publish(t, hc, base, "demo.a", "one")
	c2 := publish(t, hc, base, "demo.b", "two")
	publish(t, hc, base, "other", "not for us")
	c4 := publish(t, hc, base, "demo.a", "three")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events := make(chan sse.Event)
	runErr := make(chan error, 1)
	c := &sse.Client{URL: base + "/events/demo.%3E", HTTPClient: hc, LastEventID: string(c1)}
	go func() {
		runErr <- c.Run(ctx, func(e sse.Event) error {
			select {
			case events <- e:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	next := func() sse.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case err := <-runErr:
			t.Fatalf("client ended: %v", err)
		case <-ctx.Done():
			t.Fatal("no event before the deadline")
		}
		return sse.Event{}
	}
	want := []sse.Event{
		{ID: string(c2), Type: "message", Data: "two"},
		{ID: string(c4), Type: "message", Data: "three"},
	}
	for _, w := range want {
		if got := next(); got.ID != w.ID || got.Type != w.Type || got.Data != w.Data {
			t.Fatalf("got %+v, want %+v", got, w)
		}
	}
	// The replay is done and the stream is live: this one arrives live.
	c5 := publish(t, hc, base, "demo.c.d", "four")
	if got, w := next(), (sse.Event{ID: string(c5), Type: "message", Data: "four"}); got.ID != w.ID || got.Data != w.Data {
		t.Fatalf("got %+v, want %+v", got, w)
	}
	cancel()
	if err := <-runErr; err != context.Canceled {
		t.Errorf("client Run = %v, want context.Canceled", err)
	}
}

// TestGapEvent: a Last-Event-ID that is no cursor of this broker (an old
// server's, say) gets a "gap" event first.
func TestGapEvent(t *testing.T) {
	base, _ := start(t)
	req, _ := http.NewRequest(http.MethodGet, base+"/events/demo", nil)
	req.Header.Set("Last-Event-ID", "not-a-cursor")
	resp, err := testClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	d := sse.NewDecoder(resp.Body)
	e, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != sse.GapEvent || !strings.Contains(e.Data, `"after":"not-a-cursor"`) {
		t.Fatalf("first event %+v, want a %q event after not-a-cursor", e, sse.GapEvent)
	}
}

// TestShutdownEndsStreams: run returns on cancel although a stream is open,
// and the stream ends cleanly (the client would reconnect elsewhere).
func TestShutdownEndsStreams(t *testing.T) {
	base, stop := start(t)
	hc := testClient(t)
	resp, err := hc.Get(base + "/events/demo")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	c := publish(t, hc, base, "demo", "before shutdown")
	r := bufio.NewReader(resp.Body)
	d := sse.NewDecoder(r)
	e, err := d.Next()
	if err != nil || e.ID != string(c) || e.Data != "before shutdown" {
		t.Fatalf("got %+v, %v; want the event with id %s", e, err, c)
	}
	stop() // fails the test if run does not return nil
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("after shutdown Next = %v, want io.EOF", err)
	}
}

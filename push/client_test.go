package push_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

// gatedDialer connects clients to a hub in memory. The test can cut the
// current connection and hold the next dial until it releases it.
type gatedDialer struct {
	h    *push.Hub
	user string

	mu    sync.Mutex
	conn  push.Conn     // the current client end; guarded by mu
	gate  chan struct{} // when not nil, dials wait for it; guarded by mu
	dials int           // guarded by mu
}

func (d *gatedDialer) dial(ctx context.Context) (push.Conn, error) {
	d.mu.Lock()
	gate := d.gate
	d.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := d.h.Pipe(d.user)
	d.mu.Lock()
	d.conn = c
	d.dials++
	d.mu.Unlock()
	return c, nil
}

// cut drops the current connection and holds the next dial.
func (d *gatedDialer) cut() (release func()) {
	d.mu.Lock()
	gate := make(chan struct{})
	d.gate = gate
	c := d.conn
	d.mu.Unlock()
	_ = c.Close(push.StatusGoingAway, "cut by the test")
	return func() {
		d.mu.Lock()
		d.gate = nil
		d.mu.Unlock()
		close(gate)
	}
}

func connect(t *testing.T, ctx context.Context, d *gatedDialer, opts ...push.ClientOption) *push.Client {
	t.Helper()
	opts = append([]push.ClientOption{push.WithDialer(d.dial), push.Backoff(time.Millisecond, 2*time.Millisecond)}, opts...)
	c, err := push.Connect(ctx, "", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func next(t *testing.T, ctx context.Context, c *push.Client) push.Message {
	t.Helper()
	m, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return m
}

func TestClientRecoversWhatItMissedAfterReconnect(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t)
	d := &gatedDialer{h: h, user: "ann"}
	c := connect(t, ctx, d)
	if err := c.Subscribe(ctx, "feed.*", ""); err != nil {
		t.Fatal(err)
	}
	var want []string
	pub := func(from, to int) {
		for i := from; i < to; i++ {
			publish(t, h, fmt.Sprintf("feed.%d", i%3), fmt.Sprint(i))
			want = append(want, fmt.Sprint(i))
		}
	}
	var got []string
	take := func() {
		for len(got) < len(want) {
			got = append(got, string(next(t, ctx, c).Data))
		}
	}
	pub(0, 5)
	take()
	release := d.cut()
	pub(5, 12) // while the client is away
	release()
	pub(12, 15) // while it reconnects, or after
	take()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want exactly %v", got, want)
	}
	d.mu.Lock()
	dials := d.dials
	d.mu.Unlock()
	if dials != 2 {
		t.Errorf("dialed %d times, want 2", dials)
	}
}

func TestClientSurfacesGapWhenHistoryDoesNotReach(t *testing.T) {
	ctx := testContext(t)
	b := pubsub.NewBroker(pubsub.History(2, 0))
	h := newHubOn(t, b)
	d := &gatedDialer{h: h}
	c := connect(t, ctx, d)
	if err := c.Subscribe(ctx, "feed", ""); err != nil {
		t.Fatal(err)
	}
	publish(t, h, "feed", "0")
	next(t, ctx, c)
	release := d.cut()
	for i := 1; i <= 5; i++ { // history keeps only 4 and 5
		publish(t, h, "feed", fmt.Sprint(i))
	}
	release()
	_, err := c.Next(ctx)
	var gap *push.GapError
	if !errors.Is(err, push.ErrGap) || !errors.As(err, &gap) || gap.Sub != "feed" || gap.Reason != "trimmed" {
		t.Fatalf("Next = %v, want a gap on feed (trimmed)", err)
	}
	for _, w := range []string{"4", "5"} {
		if m := next(t, ctx, c); string(m.Data) != w {
			t.Fatalf("got %q, want %q", m.Data, w)
		}
	}
}

func TestClientRequestReply(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t, push.OnMessage(func(_ context.Context, r *push.Request) ([]byte, error) {
		if string(r.Data) == "bad" {
			return nil, errors.New("no thanks")
		}
		return append([]byte("echo "), r.Data...), nil
	}))
	c := connect(t, ctx, &gatedDialer{h: h, user: "ann"})
	got, err := c.Request(ctx, []byte("hi"))
	if err != nil || string(got) != "echo hi" {
		t.Fatalf("Request = %q, %v; want echo hi", got, err)
	}
	_, err = c.Request(ctx, []byte("bad"))
	var re *push.ReplyError
	if !errors.As(err, &re) || re.Message != "no thanks" {
		t.Fatalf("Request = %v, want a ReplyError", err)
	}
	if err := c.Subscribe(ctx, "push.all", ""); err == nil {
		t.Fatal("subscribing to a reserved topic succeeded")
	}
}

func TestClientRequestTimesOut(t *testing.T) {
	ctx := testContext(t)
	release := make(chan struct{})
	h, _ := newHub(t, push.OnMessage(func(ctx context.Context, r *push.Request) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}))
	defer close(release)
	fake := clock.NewFake(time.Unix(0, 0))
	c := connect(t, ctx, &gatedDialer{h: h}, push.WithClientClock(fake), push.RequestTimeout(time.Second))
	done := make(chan error, 1)
	go func() {
		_, err := c.Request(ctx, []byte("slow"))
		done <- err
	}()
	if err := fake.BlockUntilTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Second)
	if err := <-done; !errors.Is(err, push.ErrTimeout) {
		t.Fatalf("Request = %v, want ErrTimeout", err)
	}
}

func TestClientEndsWithItsContext(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t)
	cctx, cancel := context.WithCancel(ctx)
	c, err := push.Connect(cctx, "", push.WithDialer((&gatedDialer{h: h}).dial))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := c.Next(ctx); !errors.Is(err, push.ErrClientClosed) {
		t.Fatalf("Next after the context ended = %v, want ErrClientClosed", err)
	}
	c.Close()
}

// TestCrossNodeUserDelivery: two hubs share a broker. A message to a user
// connected only to the second hub, sent through the first, arrives; and
// the first hub sees the user online.
func TestCrossNodeUserDelivery(t *testing.T) {
	ctx := testContext(t)
	b := pubsub.NewBroker()
	online := make(chan push.PresenceEvent, 8)
	h1 := newHubOn(t, b, push.OnPresence(func(e push.PresenceEvent) { online <- e }))
	h2, err := push.NewHub(b)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h2.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	c := connect(t, ctx, &gatedDialer{h: h2, user: "bob"})
	select {
	case e := <-online:
		if e != (push.PresenceEvent{User: "bob", Online: true}) {
			t.Fatalf("presence event %+v, want bob online", e)
		}
	case <-ctx.Done():
		t.Fatal("hub 1 never saw bob come online")
	}
	if got := h1.Presence(); got["bob"] != 1 {
		t.Errorf("hub 1 Presence = %v, want bob:1", got)
	}
	if got := h1.LocalPresence(); len(got) != 0 {
		t.Errorf("hub 1 LocalPresence = %v, want none", got)
	}
	if err := h1.SendUser(ctx, "bob", []byte(`"hello from node 1"`)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, c); string(m.Data) != `"hello from node 1"` {
		t.Fatalf("got %q", m.Data)
	}
	c.Close()
	select {
	case e := <-online:
		if e != (push.PresenceEvent{User: "bob", Online: false}) {
			t.Fatalf("presence event %+v, want bob offline", e)
		}
	case <-ctx.Done():
		t.Fatal("hub 1 never saw bob leave")
	}
}

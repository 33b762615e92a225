package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

// frame is one protocol message as a test reads it.
type frame struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Sub    string          `json:"sub"`
	Topic  string          `json:"topic"`
	Cursor string          `json:"cursor"`
	After  string          `json:"after"`
	Reason string          `json:"reason"`
	Error  string          `json:"error"`
	Conn   string          `json:"conn"`
	User   string          `json:"user"`
	Data   json.RawMessage `json:"data"`
	Text   string          `json:"text"`
}

// peer is a raw protocol client on an in-memory connection.
type peer struct {
	t    *testing.T
	c    push.Conn
	ctx  context.Context
	held []frame
}

func newPeer(t *testing.T, ctx context.Context, h *push.Hub, user string) *peer {
	t.Helper()
	p := &peer{t: t, c: h.Pipe(user), ctx: ctx}
	t.Cleanup(func() { _ = p.c.Close(push.StatusNormalClosure, "test over") })
	if w := p.next(); w.Type != push.TypeWelcome || w.User != user || w.Conn == "" {
		t.Fatalf("first frame %+v, want a welcome for %q", w, user)
	}
	return p
}

// next returns the next protocol message, failing on a read error.
func (p *peer) next() frame {
	p.t.Helper()
	f, err := p.read()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return f
}

func (p *peer) read() (frame, error) {
	for len(p.held) == 0 {
		b, err := p.c.Read(p.ctx)
		if err != nil {
			return frame{}, err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			var f frame
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				p.t.Fatalf("line %q: %v", line, err)
			}
			p.held = append(p.held, f)
		}
	}
	f := p.held[0]
	p.held = p.held[1:]
	return f, nil
}

// closed reads until the connection ends and returns its close code.
func (p *peer) closed() push.StatusCode {
	p.t.Helper()
	for {
		_, err := p.read()
		if err != nil {
			return push.CloseStatus(err)
		}
	}
}

func (p *peer) send(line string) {
	p.t.Helper()
	if err := p.c.Write(p.ctx, []byte(line)); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// subscribe subscribes and waits for the acknowledgement.
func (p *peer) subscribe(pattern, after string) {
	p.t.Helper()
	p.send(fmt.Sprintf(`{"type":"subscribe","id":"s-%s","topic":%q,"after":%q}`, pattern, pattern, after))
	if f := p.next(); f.Type != push.TypeReply || f.ID != "s-"+pattern {
		p.t.Fatalf("subscribe %s: got %+v, want its reply", pattern, f)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newHub returns a hub on a fresh broker; both end with the test.
func newHub(t *testing.T, opts ...push.Option) (*push.Hub, *pubsub.Broker) {
	t.Helper()
	b := pubsub.NewBroker(pubsub.History(1000, 0))
	return newHubOn(t, b, opts...), b
}

func newHubOn(t *testing.T, b *pubsub.Broker, opts ...push.Option) *push.Hub {
	t.Helper()
	h, err := push.NewHub(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		b.Close()
	})
	return h
}

func publish(t *testing.T, h *push.Hub, topic, data string) pubsub.Cursor {
	t.Helper()
	c, err := h.Publish(context.Background(), topic, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTopicDeliveryInOrderToEverySubscriber(t *testing.T) {
	ctx := testContext(t)
	h, b := newHub(t)
	a, c := newPeer(t, ctx, h, "ann"), newPeer(t, ctx, h, "")
	a.subscribe("chat.*", "")
	c.subscribe("chat.*", "")
	// presence, broadcasts, ann's user topic, and chat.* once for both.
	if got := b.Stats().Subscribers; got != 4 {
		t.Errorf("broker subscriptions = %d, want 4 (one per pattern, not per connection)", got)
	}
	var cursors []pubsub.Cursor
	for i := range 3 {
		cursors = append(cursors, publish(t, h, "chat.room", fmt.Sprintf(`{"n":%d}`, i)))
	}
	publish(t, h, "other", "not for them")
	for _, p := range []*peer{a, c} {
		for i := range 3 {
			f := p.next()
			want := frame{Type: "message", Sub: "chat.*", Topic: "chat.room", Cursor: string(cursors[i]), Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
			if f.Type != want.Type || f.Sub != want.Sub || f.Topic != want.Topic || f.Cursor != want.Cursor || string(f.Data) != string(want.Data) {
				t.Fatalf("message %d: got %+v, want %+v", i, f, want)
			}
		}
	}
}

func TestPayloadForms(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string // the member that carries it
	}{
		{"JSON travels as data", `{"a":[1,2]}`, `"data":{"a":[1,2]}`},
		{"text travels as text", "hello <world>", `"text":"hello <world>"`},
		{"JSON across lines travels as text", "{\n}", `"text":"{\n}"`},
		{"bytes that are not UTF-8 travel as base64", "\xff\x00", `"base64":"/wA="`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			h, _ := newHub(t)
			p := newPeer(t, ctx, h, "")
			p.subscribe("t", "")
			publish(t, h, "t", tt.data)
			b, err := p.c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tt.want) {
				t.Errorf("frame %s lacks %s", b, tt.want)
			}
		})
	}
}

func TestSendToConnectionUserAndEveryone(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t)
	ann1, ann2, bob := newPeer(t, ctx, h, "ann"), newPeer(t, ctx, h, "ann"), newPeer(t, ctx, h, "bob")
	// The connection id is in the welcome; take bob's from the hub.
	if err := h.Send("no-such-conn", []byte("x")); !errors.Is(err, push.ErrNoConn) {
		t.Errorf("Send to an unknown connection = %v, want ErrNoConn", err)
	}
	if err := h.SendUser(ctx, "ann", []byte(`"for ann"`)); err != nil {
		t.Fatal(err)
	}
	if err := h.Broadcast(ctx, []byte(`"for all"`)); err != nil {
		t.Fatal(err)
	}
	// The user's topic and the broadcast topic are two streams: their
	// order relative to each other is not defined.
	for _, p := range []*peer{ann1, ann2} {
		got := map[string]bool{}
		for range 2 {
			f := p.next()
			if f.Type != "message" || f.Sub != "" || f.Cursor != "" {
				t.Errorf("ann got %+v, want a message without sub or cursor", f)
			}
			got[string(f.Data)] = true
		}
		if !got[`"for ann"`] || !got[`"for all"`] {
			t.Errorf("ann got %v, want the user message and the broadcast", got)
		}
	}
	if f := bob.next(); string(f.Data) != `"for all"` {
		t.Errorf("bob got %+v, want the broadcast", f)
	}
	if got := h.LocalPresence(); got["ann"] != 2 || got["bob"] != 1 || len(got) != 2 {
		t.Errorf("LocalPresence = %v, want ann:2 bob:1", got)
	}
}

func TestSendToOneConnection(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t)
	conn := h.Pipe("ann")
	defer conn.Close(push.StatusNormalClosure, "")
	b, err := conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var w frame
	_ = json.Unmarshal(b, &w)
	if err := h.Send(w.Conn, []byte("just you")); err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, c: conn, ctx: ctx}
	if f := p.next(); f.Text != "just you" {
		t.Errorf("got %+v, want the direct message", f)
	}
}

func TestProtocolErrors(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string // error text contains
	}{
		{"unknown type", `{"type":"dance","id":"1"}`, "unknown message type"},
		{"invalid pattern", `{"type":"subscribe","id":"1","topic":"a..b"}`, "invalid subject"},
		{"reserved prefix", `{"type":"subscribe","id":"1","topic":"push.user.*"}`, "reserved"},
		{"leading wildcard", `{"type":"subscribe","id":"1","topic":">"}`, "reserved"},
		{"send without a handler", `{"type":"send","id":"1","data":1}`, "takes no messages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			h, _ := newHub(t)
			p := newPeer(t, ctx, h, "")
			p.send(tt.line)
			if f := p.next(); f.Type != "error" || f.ID != "1" || !strings.Contains(f.Error, tt.want) {
				t.Errorf("got %+v, want an error with id 1 containing %q", f, tt.want)
			}
		})
	}
}

func TestConnectionClosedWithCode(t *testing.T) {
	tests := []struct {
		name string
		opts []push.Option
		do   func(p *peer)
		want push.StatusCode
	}{
		{"malformed frame", nil, func(p *peer) { p.send("not json") }, push.StatusInvalidData},
		{"message over the read limit", []push.Option{push.ReadLimit(16)},
			func(p *peer) { p.send(`{"type":"send","data":"0123456789abcdef"}`) }, push.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			h, _ := newHub(t, tt.opts...)
			p := newPeer(t, ctx, h, "")
			tt.do(p)
			if got := p.closed(); got != tt.want {
				t.Errorf("closed with %d, want %d", got, tt.want)
			}
		})
	}
}

func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name   string
		opts   []push.Option
		first  string
		second string
		want   push.StatusCode
	}{
		{"over the hub's limit", []push.Option{push.MaxConns(1)}, "ann", "bob", push.StatusTryAgainLater},
		{"over the user's limit", []push.Option{push.MaxConnsPerUser(1)}, "ann", "ann", push.StatusUserLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			h, _ := newHub(t, tt.opts...)
			newPeer(t, ctx, h, tt.first)
			p := &peer{t: t, c: h.Pipe(tt.second), ctx: ctx}
			if got := p.closed(); got != tt.want {
				t.Errorf("second connection closed with %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSlowConsumerIsDisconnectedWithoutDelayingOthers(t *testing.T) {
	ctx := testContext(t)
	fake := clock.NewFake(time.Unix(0, 0))
	h, _ := newHub(t, push.WithClock(fake), push.Heartbeat(0, 0), push.SendQueue(8, 1<<20))
	slow, quick := newPeer(t, ctx, h, ""), newPeer(t, ctx, h, "")
	slow.subscribe("t", "")
	quick.subscribe("t", "")
	// slow stops reading: its pipe fills, its writer blocks, its queue
	// overflows. quick gets everything meanwhile.
	const n = 200
	for i := range n {
		publish(t, h, "t", fmt.Sprint(i))
		if f := quick.next(); f.Data == nil || string(f.Data) != fmt.Sprint(i) {
			t.Fatalf("quick got %+v, want message %d", f, i)
		}
	}
	// slow's writer is stuck in a write: past the write timeout it gives up
	// and closes with the slow-consumer code. Its write timer may not be
	// armed yet (its writer runs on its own), so advance until it fires.
	code := make(chan push.StatusCode, 1)
	closedCtx, closed := context.WithCancel(ctx)
	go func() {
		defer closed()
		code <- slow.closed()
	}()
	for {
		// presence + slow's write, unless slow was closed without one.
		if fake.BlockUntilTimers(closedCtx, 2) == nil {
			fake.Advance(push.DefaultWriteTimeout)
		}
		select {
		case got := <-code:
			if got != push.StatusSlowConsumer {
				t.Errorf("slow closed with %d, want %d", got, push.StatusSlowConsumer)
			}
			return
		case <-ctx.Done():
			t.Fatal("slow was not closed")
		default:
		}
	}
}

func TestDropNewestTellsTheClient(t *testing.T) {
	ctx := testContext(t)
	fake := clock.NewFake(time.Unix(0, 0))
	h, _ := newHub(t, push.WithClock(fake), push.Heartbeat(0, 0), push.SendQueue(2, 1<<20), push.SlowConsumer(push.DropNewest))
	p := newPeer(t, ctx, h, "")
	p.subscribe("t", "")
	for i := range 100 {
		publish(t, h, "t", fmt.Sprint(i))
	}
	var gaps, msgs int
	publish(t, h, "t", `"last"`)
	for {
		f := p.next()
		if f.Type == "gap" && f.Reason == "dropped" {
			gaps++
		} else if f.Type == "message" {
			msgs++
		}
		if string(f.Data) == `"last"` || msgs+gaps > 101 {
			break
		}
		if gaps > 0 && msgs < 100 && len(p.held) == 0 {
			// keep reading: more may come, "last" may be dropped too
			publish(t, h, "t", `"last"`)
		}
	}
	if gaps == 0 || msgs >= 101 {
		t.Errorf("got %d messages and %d gap notices, want some dropped and told", msgs, gaps)
	}
}

// pingSpy is the server's end of a connection, telling the test when the
// hub starts a ping and how it ended.
type pingSpy struct {
	push.Conn
	started chan struct{}
	ended   chan error
}

func (p *pingSpy) Ping(ctx context.Context) error {
	p.started <- struct{}{}
	err := p.Conn.Ping(ctx)
	p.ended <- err
	return err
}

// spyPeer serves a new in-memory connection through a pingSpy.
func spyPeer(t *testing.T, ctx context.Context, h *push.Hub, wg *sync.WaitGroup) (*peer, *pingSpy) {
	client, server := push.Pipe()
	spy := &pingSpy{Conn: server, started: make(chan struct{}, 4), ended: make(chan error, 4)}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = h.Serve(ctx, spy, "")
	}()
	p := &peer{t: t, c: client, ctx: ctx}
	t.Cleanup(func() { _ = client.Close(push.StatusNormalClosure, "") })
	if f := p.next(); f.Type != push.TypeWelcome {
		t.Fatalf("got %+v, want the welcome", f)
	}
	return p, spy
}

func TestHeartbeat(t *testing.T) {
	ctx := testContext(t)
	fake := clock.NewFake(time.Unix(0, 0))
	h, _ := newHub(t, push.WithClock(fake), push.Heartbeat(10*time.Second, 5*time.Second))
	var wg sync.WaitGroup
	defer wg.Wait()
	alive, aliveSpy := spyPeer(t, ctx, h, &wg)
	mute, muteSpy := spyPeer(t, ctx, h, &wg)
	// alive keeps reading, and so answers pings; mute reads nothing.
	aliveDone := make(chan push.StatusCode, 1)
	go func() {
		for {
			if _, err := alive.c.Read(ctx); err != nil {
				aliveDone <- push.CloseStatus(err)
				return
			}
		}
	}()
	// presence + both heartbeat timers, armed before the welcome.
	if err := fake.BlockUntilTimers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	fake.Advance(10 * time.Second)
	<-aliveSpy.started
	<-muteSpy.started
	if err := <-aliveSpy.ended; err != nil {
		t.Fatalf("the ping of the peer that reads failed: %v", err)
	}
	// mute's pong timeout is armed once its ping started: presence, mute's
	// pong timeout, alive's next heartbeat.
	if err := fake.BlockUntilTimers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	fake.Advance(5 * time.Second)
	if err := <-muteSpy.ended; err == nil {
		t.Fatal("the ping of the mute peer succeeded")
	}
	if got := mute.closed(); got != push.StatusPingTimeout {
		t.Errorf("mute closed with %d, want %d", got, push.StatusPingTimeout)
	}
	select {
	case code := <-aliveDone:
		t.Fatalf("the peer that answers was closed (%d)", code)
	default:
	}
	_ = alive.c.Close(push.StatusNormalClosure, "")
	<-aliveDone
}

func TestShutdownSendsGoingAway(t *testing.T) {
	ctx := testContext(t)
	b := pubsub.NewBroker()
	defer b.Close()
	h, err := push.NewHub(b)
	if err != nil {
		t.Fatal(err)
	}
	p := newPeer(t, ctx, h, "ann")
	p.subscribe("t", "")
	done := make(chan error, 1)
	go func() { done <- h.Shutdown(ctx) }()
	if got := p.closed(); got != push.StatusGoingAway {
		t.Errorf("closed with %d, want %d", got, push.StatusGoingAway)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	late := &peer{t: t, c: h.Pipe("bob"), ctx: ctx}
	if got := late.closed(); got != push.StatusGoingAway {
		t.Errorf("a connection after Shutdown closed with %d, want %d", got, push.StatusGoingAway)
	}
}

func TestResumeAfterCursorWithoutGapOrDuplicate(t *testing.T) {
	ctx := testContext(t)
	h, _ := newHub(t)
	var cursors []pubsub.Cursor
	for i := range 5 {
		cursors = append(cursors, publish(t, h, "feed.a", fmt.Sprint(i)))
	}
	// A live subscriber keeps the shared fan-out busy meanwhile.
	other := newPeer(t, ctx, h, "")
	other.subscribe("feed.*", "")
	p := newPeer(t, ctx, h, "")
	p.subscribe("feed.*", string(cursors[1]))
	// Published while the replay runs: these reach p through the handoff.
	for i := 5; i < 10; i++ {
		publish(t, h, "feed.a", fmt.Sprint(i))
	}
	for want := 2; want < 10; want++ {
		f := p.next()
		if f.Type != "message" || string(f.Data) != fmt.Sprint(want) {
			t.Fatalf("got %+v, want message %d", f, want)
		}
	}
	publish(t, h, "feed.b", "10")
	if f := p.next(); string(f.Data) != "10" {
		t.Fatalf("got %+v, want live message 10", f)
	}
}

func TestResumeReportsGap(t *testing.T) {
	tests := []struct {
		name   string
		after  func(h *push.Hub) string
		reason string
	}{
		{"a cursor that is no cursor", func(*push.Hub) string { return "nonsense" }, "unknown cursor"},
		{"a cursor from another broker", func(*push.Hub) string { return "zzzzzzzz.3" }, "epoch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			h, _ := newHub(t)
			p := newPeer(t, ctx, h, "")
			p.subscribe("t", tt.after(h))
			if f := p.next(); f.Type != "gap" || f.Sub != "t" || f.Reason != tt.reason {
				t.Fatalf("got %+v, want a gap on t with reason %q", f, tt.reason)
			}
			publish(t, h, "t", "after the gap")
			if f := p.next(); f.Text != "after the gap" {
				t.Fatalf("got %+v, want the live message", f)
			}
		})
	}
}

func TestMessagesToTheServer(t *testing.T) {
	ctx := testContext(t)
	var mu sync.Mutex
	var got []push.Request
	h, _ := newHub(t, push.OnMessage(func(_ context.Context, r *push.Request) ([]byte, error) {
		mu.Lock()
		got = append(got, *r)
		mu.Unlock()
		if string(r.Data) == `"fail"` {
			return nil, errors.New("refused")
		}
		return []byte(`{"ok":true}`), nil
	}))
	p := newPeer(t, ctx, h, "ann")
	// Two messages in one frame: a notice (no id) and a request.
	p.send("{\"type\":\"send\",\"text\":\"notice\"}\n{\"type\":\"send\",\"id\":\"7\",\"data\":[1]}")
	if f := p.next(); f.Type != "reply" || f.ID != "7" || string(f.Data) != `{"ok":true}` {
		t.Errorf("got %+v, want reply 7", f)
	}
	p.send(`{"type":"send","id":"8","data":"fail"}`)
	if f := p.next(); f.Type != "error" || f.ID != "8" || f.Error != "refused" {
		t.Errorf("got %+v, want error 8", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || string(got[0].Data) != "notice" || got[0].ID != "" || got[1].ID != "7" || got[1].User != "ann" {
		t.Errorf("handler saw %+v", got)
	}
}

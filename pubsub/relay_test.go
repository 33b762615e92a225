package pubsub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pubsubtest"
)

// logEngine stands in for Redis, NATS or PostgreSQL: a shared, trimmed log
// with a broker-wide sequence, that several "nodes" read.
type logEngine struct {
	mu      sync.Mutex
	epoch   string
	seq     uint64
	log     []pubsub.Message // retained, oldest first
	pos     []uint64         // positions of log
	trimmed uint64           // newest position no longer retained
	keep    int
	changed chan struct{} // closed and replaced on every append
	reads   int           // history reads, to check the local fast paths
}

func newLogEngine(keep int) *logEngine {
	return &logEngine{epoch: fmt.Sprintf("log%d", time.Now().UnixNano()%1e6), keep: keep, changed: make(chan struct{})}
}

func (e *logEngine) append(m pubsub.Message) pubsub.Cursor {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	m.Cursor = pubsub.MakeCursor(e.epoch, pubsub.Position{Lo: e.seq})
	if m.ID == "" {
		m.ID = fmt.Sprintf("id-%d", e.seq)
	}
	m.Time = time.Now()
	e.log = append(e.log, m)
	e.pos = append(e.pos, e.seq)
	if len(e.log) > e.keep {
		n := len(e.log) - e.keep
		e.trimmed = e.pos[n-1]
		e.log, e.pos = append([]pubsub.Message(nil), e.log[n:]...), append([]uint64(nil), e.pos[n:]...)
	}
	close(e.changed)
	e.changed = make(chan struct{})
	return m.Cursor
}

// read returns retained messages after `after` (all of them), and a channel
// closed on the next append.
func (e *logEngine) read(after uint64) ([]pubsub.Message, <-chan struct{}, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []pubsub.Message
	for i, p := range e.pos {
		if p > after {
			out = append(out, e.log[i])
		}
	}
	return out, e.changed, e.trimmed > after
}

func (e *logEngine) history(_ context.Context, pattern string, after pubsub.Position, limit int) ([]pubsub.Message, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reads++
	if after != (pubsub.Position{}) && e.trimmed > after.Lo {
		return nil, &pubsub.GapError{Reason: "trimmed"}
	}
	var out []pubsub.Message
	for i, p := range e.pos {
		if p > after.Lo && pubsub.Match(pattern, e.log[i].Topic) && len(out) < limit {
			out = append(out, e.log[i])
		}
	}
	return out, nil
}

func (e *logEngine) head(context.Context) (pubsub.Position, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return pubsub.Position{Lo: e.seq}, nil
}

// logNode is one node's broker on the engine: Publish writes to the log, one
// feed goroutine reads it into a Relay.
type logNode struct {
	engine *logEngine
	relay  *pubsub.Relay
	cancel context.CancelFunc
	done   chan struct{}
}

var _ pubsub.Backend = (*logNode)(nil)

func newLogNode(e *logEngine) *logNode {
	e.mu.Lock()
	start := pubsub.Position{Lo: e.seq}
	epoch := e.epoch
	e.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	n := &logNode{engine: e, cancel: cancel, done: make(chan struct{})}
	n.relay = pubsub.NewRelay(pubsub.RelayConfig{Epoch: epoch, Start: start, History: e.history, Head: e.head})
	go n.feed(ctx)
	return n
}

func (n *logNode) feed(ctx context.Context) {
	defer close(n.done)
	for {
		msgs, changed, gap := n.engine.read(n.relay.Last().Lo)
		if gap {
			n.engine.mu.Lock()
			start := pubsub.Position{Lo: n.engine.trimmed}
			n.engine.mu.Unlock()
			n.relay.Reset(n.relay.Epoch(), start, "trimmed while the feed was away")
			continue
		}
		for _, m := range msgs {
			if err := n.relay.Deliver(ctx, m); err != nil {
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func (n *logNode) Publish(ctx context.Context, m pubsub.Message) (pubsub.Cursor, error) {
	if err := pubsub.ValidateTopic(m.Topic); err != nil {
		return "", err
	}
	select {
	case <-n.done:
		return "", pubsub.ErrClosed
	default:
	}
	return n.engine.append(m), nil
}

func (n *logNode) Subscribe(ctx context.Context, pattern string, opts ...pubsub.SubscribeOption) (pubsub.Subscription, error) {
	return n.relay.Subscribe(ctx, pattern, opts...)
}

func (n *logNode) Close() error {
	n.cancel()
	<-n.done
	return n.relay.Close()
}

func TestRelayConformance(t *testing.T) {
	pubsubtest.RunWith(t, pubsubtest.Options{
		NewBackend: func(*testing.T) pubsub.Backend { return newLogNode(newLogEngine(100_000)) },
		NewSmallHistory: func(_ *testing.T, n int) pubsub.Backend {
			return newLogNode(newLogEngine(n))
		},
		FeedBlocks: true,
	})
}

func TestRelayAcrossNodes(t *testing.T) {
	ctx := testCtx(t)
	e := newLogEngine(1000)
	a, b := newLogNode(e), newLogNode(e)
	defer a.Close()
	defer b.Close()

	sub, err := b.Subscribe(ctx, "orders.>")
	require.NoError(t, err)
	defer sub.Close()
	first := publish(t, a, "orders.eu", "1")
	publish(t, a, "orders.us", "2")
	for _, want := range []string{"1", "2"} {
		m, err := sub.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, string(m.Data))
	}

	// A client that read "1" on node b reconnects to node a.
	resumed, err := a.Subscribe(ctx, "orders.*", pubsub.After(first))
	require.NoError(t, err)
	defer resumed.Close()
	publish(t, b, "orders.eu", "3")
	for _, want := range []string{"2", "3"} {
		m, err := resumed.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, string(m.Data))
	}
}

// The handoff between history and the live feed: whatever the feed has
// delivered when the subscription opens comes from history, the rest from
// the feed, each message once, while a publisher keeps publishing.
func TestRelayHandoffUnderLoad(t *testing.T) {
	ctx := testCtx(t)
	e := newLogEngine(100_000)
	node := newLogNode(e)
	defer node.Close()
	const total = 3000
	start := publish(t, node, "t", "0")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= total; i++ {
			if _, err := node.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte(fmt.Sprint(i))}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for round := 0; round < 5; round++ {
		sub, err := node.Subscribe(ctx, "t", pubsub.After(start), pubsub.Buffer(total*2))
		require.NoError(t, err)
		buf := make([]pubsub.Message, 0, 100)
		for want := 1; want <= total; {
			msgs, err := sub.NextBatch(ctx, buf[:0])
			require.NoError(t, err)
			for _, m := range msgs {
				require.Equal(t, fmt.Sprint(want), string(m.Data), "round %d", round)
				want++
			}
		}
		sub.Close()
	}
	<-done
}

func TestRelayResetReportsGap(t *testing.T) {
	ctx := testCtx(t)
	e := newLogEngine(1000)
	node := newLogNode(e)
	defer node.Close()
	sub, err := node.Subscribe(ctx, "t")
	require.NoError(t, err)
	defer sub.Close()
	wild, err := node.Subscribe(ctx, ">")
	require.NoError(t, err)
	defer wild.Close()

	node.relay.Reset(node.relay.Epoch(), node.relay.Last(), "engine restarted")
	publish(t, node, "t", "after")
	for _, s := range []pubsub.Subscription{sub, wild} {
		_, err = s.Next(ctx)
		var gap *pubsub.GapError
		require.ErrorAs(t, err, &gap)
		assert.Equal(t, "engine restarted", gap.Reason)
		m, err := s.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, "after", string(m.Data))
	}
}

func TestRelayLiveSubscriptionReadsNoHistory(t *testing.T) {
	ctx := testCtx(t)
	e := newLogEngine(1000)
	node := newLogNode(e)
	defer node.Close()
	for range 1000 {
		s, err := node.Subscribe(ctx, "t")
		require.NoError(t, err)
		defer s.Close()
	}
	publish(t, node, "t", "x")
	e.mu.Lock()
	defer e.mu.Unlock()
	assert.Zero(t, e.reads, "live subscriptions are served by the one feed")
}

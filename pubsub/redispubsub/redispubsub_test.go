package redispubsub_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/redispubsub"
)

// Two nodes, each with its own client and broker on one namespace: what
// one publishes the other delivers, to exact and wildcard subscriptions,
// and a cursor taken on one node resumes on the other.
func TestAcrossNodes(t *testing.T) {
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	a := newBroker(t, newClient(t), ns)
	b := newBroker(t, newClient(t), ns)

	exact, err := b.Subscribe(ctx, topic+".orders.eu")
	require.NoError(t, err)
	defer exact.Close()
	wild, err := b.Subscribe(ctx, topic+".orders.>")
	require.NoError(t, err)
	defer wild.Close()

	cs := publishN(t, ctx, a, topic+".orders.eu", 1, 3)
	got := expect(t, ctx, exact, 1, 3)
	expect(t, ctx, wild, 1, 3)
	for k, m := range got {
		assert.Equal(t, cs[k], m.Cursor, "cursor on node b vs the one Publish returned on node a")
		assert.Equal(t, topic+".orders.eu", m.Topic)
		assert.NotEmpty(t, m.ID)
		assert.False(t, m.Time.IsZero())
	}
	publishN(t, ctx, a, topic+".orders.us", 4, 4)
	expect(t, ctx, wild, 4, 4)

	// A client that read message 1 on node a reconnects to node b with the
	// cursor node a gave it: b replays 2..4 from Redis, then continues live.
	resumed, err := b.Subscribe(ctx, topic+".orders.*", pubsub.After(cs[0]))
	require.NoError(t, err)
	defer resumed.Close()
	expect(t, ctx, resumed, 2, 4)
	publishN(t, ctx, a, topic+".orders.eu", 5, 5)
	expect(t, ctx, resumed, 5, 5)
	// And the other way round, with a cursor from b's subscription.
	back, err := a.Subscribe(ctx, topic+".orders.>", pubsub.After(got[1].Cursor))
	require.NoError(t, err)
	defer back.Close()
	expect(t, ctx, back, 3, 5)
}

// Ten thousand local subscribers of a topic cost the node one engine
// subscription: one XREAD connection, counted engine-side by client name,
// and no more connections through the proxy than with one subscriber.
func TestOneEngineSubscriptionPerNode(t *testing.T) {
	const subscribers = 10_000
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	name := "redispubsub-test-" + strings.ToLower(topic)
	proxy, client := newProxied(t, name)
	node := newBroker(t, client, ns)
	admin := newClient(t)

	subs := make([]pubsub.Subscription, 0, subscribers)
	subscribe := func() {
		s, err := node.Subscribe(ctx, topic)
		require.NoError(t, err)
		subs = append(subs, s)
	}
	subscribe()
	publishN(t, ctx, node, topic, 0, 0)
	expect(t, ctx, subs[0], 0, 0)
	opened := proxy.Accepted()
	assert.LessOrEqual(t, opened, 3, "connections for one subscriber: the feed's and the client's")

	for len(subs) < subscribers {
		subscribe()
	}
	t.Cleanup(func() {
		for _, s := range subs {
			s.Close()
		}
	})
	publishN(t, ctx, node, topic, 1, 1)
	for k, s := range subs {
		m, err := s.Next(ctx)
		require.NoError(t, err, "subscriber %d", k)
		require.Equal(t, 1, index(m), "subscriber %d", k)
	}
	assert.Equal(t, opened, proxy.Accepted(), "connections opened with %d subscribers vs with one", subscribers)
	assert.Equal(t, subscribers, node.Stats().Subscribers)

	// Engine side: the node's clients, and how many of them read the stream.
	list, err := admin.ClientList(ctx).Result()
	require.NoError(t, err)
	var mine, reading int
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") {
			mine++
			if strings.Contains(line, " cmd=xread") {
				reading++
			}
		}
	}
	assert.Equal(t, 1, reading, "XREAD connections of the node, engine side:\n%s", list)
	assert.LessOrEqual(t, mine, 3, "connections of the node, engine side")
}

// The node's connections are cut, twice, and refused for a while, as a
// publisher on another node keeps publishing. Nothing was trimmed, so the
// subscriber gets every message, in order, and no gap.
func TestFeedSurvivesCutsWithoutLoss(t *testing.T) {
	const total = 1500
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	proxy, client := newProxied(t)
	node := newBroker(t, client, ns)
	publisher := newBroker(t, newClient(t), ns) // direct, never cut

	sub, err := node.Subscribe(ctx, topic, pubsub.Buffer(total))
	require.NoError(t, err)
	defer sub.Close()
	before := proxy.Accepted()

	// The publisher reports its progress at the points where the test
	// injects a fault, and waits for nothing.
	reached := map[int]chan struct{}{300: make(chan struct{}), 600: make(chan struct{}), 900: make(chan struct{}), 1200: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			if _, err := publisher.Publish(ctx, pubsub.Message{Topic: topic, Data: fmt.Appendf(nil, "%d", i)}); err != nil {
				done <- err
				return
			}
			if c, ok := reached[i]; ok {
				close(c)
			}
		}
		done <- nil
	}()

	faults := make(chan struct{})
	go func() {
		defer close(faults)
		<-reached[300]
		proxy.Cut()
		<-reached[600]
		proxy.Pause() // Redis is "down" for this node
		_, err := node.Publish(ctx, pubsub.Message{Topic: topic + ".x", Data: []byte("lost")})
		assert.Error(t, err, "Publish while the engine is unreachable")
		<-reached[900]
		proxy.Resume()
		<-reached[1200]
		proxy.Cut()
	}()

	for want := 1; want <= total; want++ {
		m, err := sub.Next(ctx)
		require.NoError(t, err, "waiting for message %d: nothing was trimmed, so no gap either", want)
		require.Equal(t, want, index(m))
	}
	require.NoError(t, <-done)
	<-faults
	assert.Greater(t, proxy.Accepted(), before, "the node reconnected")
}

// Messages trimmed while the node was cut off are reported as a gap, never
// skipped silently; then the feed continues with what Redis retains.
func TestCutThenTrimmedReportsGap(t *testing.T) {
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	opts := []redispubsub.Option{redispubsub.Retention(10, 0), redispubsub.ExactRetention()}
	proxy, client := newProxied(t)
	node := newBroker(t, client, ns, opts...)
	publisher := newBroker(t, newClient(t), ns, opts...)

	sub, err := node.Subscribe(ctx, topic)
	require.NoError(t, err)
	defer sub.Close()
	first := publishN(t, ctx, publisher, topic, 1, 1)[0]
	expect(t, ctx, sub, 1, 1)

	proxy.Pause()
	publishN(t, ctx, publisher, topic, 2, 30) // Redis keeps 21..30
	proxy.Resume()

	_, err = sub.Next(ctx)
	require.ErrorIs(t, err, pubsub.ErrGap)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	t.Logf("gap: %v", gap)
	expect(t, ctx, sub, 21, 30)
	publishN(t, ctx, publisher, topic, 31, 31)
	expect(t, ctx, sub, 31, 31)

	// A client resuming after message 1 on either node learns the same.
	for _, b := range []pubsub.Backend{node, publisher} {
		resumed, err := b.Subscribe(ctx, topic, pubsub.After(first))
		require.NoError(t, err)
		_, err = resumed.Next(ctx)
		require.ErrorAs(t, err, &gap)
		assert.Equal(t, "trimmed", gap.Reason)
		expect(t, ctx, resumed, 22, 31)
		resumed.Close()
	}
}

// A namespace whose stream is lost (as in a restart of Redis without
// persistence) gets a new epoch: local subscribers get a gap, old cursors
// are reported as from another epoch, and new messages flow.
func TestLostStreamChangesEpoch(t *testing.T) {
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	client := newClient(t)
	node := newBroker(t, client, ns)
	sub, err := node.Subscribe(ctx, topic)
	require.NoError(t, err)
	defer sub.Close()
	old := publishN(t, ctx, node, topic, 1, 1)[0]
	expect(t, ctx, sub, 1, 1)

	require.NoError(t, client.Del(ctx, "{"+ns+"}:stream", "{"+ns+"}:meta").Err())
	// A new stream's first id could repeat the old one's last, in the same
	// millisecond: the feed would see that only on its periodic epoch check.
	// As after a real restart, let Redis's clock move on first (only Redis
	// can tell: poll its TIME, with a bounded deadline).
	require.Eventually(t, func() bool {
		now, err := client.Time(ctx).Result()
		_, p, _ := old.Parse()
		return err == nil && now.UnixMilli() > int64(p.Hi)
	}, 5*time.Second, time.Millisecond)
	c := publishN(t, ctx, node, topic, 2, 2)[0]
	oldEpoch, _, _ := old.Parse()
	newEpoch, _, _ := c.Parse()
	require.NotEqual(t, oldEpoch, newEpoch, "epoch after the stream was lost")

	_, err = sub.Next(ctx)
	require.ErrorIs(t, err, pubsub.ErrGap)
	expect(t, ctx, sub, 2, 2)

	resumed, err := node.Subscribe(ctx, topic, pubsub.After(old))
	require.NoError(t, err)
	defer resumed.Close()
	var gap *pubsub.GapError
	_, err = resumed.Next(ctx)
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "epoch", gap.Reason)
	expect(t, ctx, resumed, 2, 2)
}

// Close stops the feed and every goroutine, ends subscriptions, fails later
// calls with ErrClosed, and leaves the caller's client open.
func TestCloseReleasesEverything(t *testing.T) {
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	ignore := goleak.IgnoreCurrent()
	client := redis.NewClient(redisOptions(t))
	b, err := redispubsub.New(ctx, client, redispubsub.Namespace(ns))
	require.NoError(t, err)

	sub, err := b.Subscribe(ctx, topic+".>")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var nextErr error
	wg.Go(func() { _, nextErr = sub.Next(ctx) })

	require.NoError(t, b.Close())
	wg.Wait()
	assert.ErrorIs(t, nextErr, pubsub.ErrClosed, "Next blocked during Close")
	_, err = b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte("x")})
	assert.ErrorIs(t, err, pubsub.ErrClosed, "Publish after Close")
	_, err = b.Subscribe(ctx, topic)
	assert.ErrorIs(t, err, pubsub.ErrClosed, "Subscribe after Close")
	assert.NoError(t, b.Close(), "second Close")
	assert.NoError(t, client.Ping(ctx).Err(), "the caller's client after Close")

	require.NoError(t, client.Close())
	goleak.VerifyNone(t, ignore)
}

func TestPublishRejects(t *testing.T) {
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	b := newBroker(t, newClient(t), ns, redispubsub.MaxMessageSize(16))
	_, err := b.Publish(ctx, pubsub.Message{Topic: topic + ".*", Data: []byte("x")})
	assert.ErrorIs(t, err, pubsub.ErrInvalidSubject)
	_, err = b.Publish(ctx, pubsub.Message{Topic: topic, Data: make([]byte, 17)})
	assert.ErrorIs(t, err, pubsub.ErrTooLarge)
	_, err = redispubsub.New(ctx, newClient(t), redispubsub.Namespace("a{b}"))
	assert.Error(t, err)
	assert.False(t, errors.Is(err, pubsub.ErrClosed))
}

// Retention by age: publishing trims what is older than the bound.
func TestRetentionByAge(t *testing.T) {
	ctx, ns, topic := testCtx(t), namespace(t), topicPrefix()
	client := newClient(t)
	b := newBroker(t, client, ns, redispubsub.Retention(1000, 0))
	publishN(t, ctx, b, topic, 1, 5)
	// Then publish through a broker with a 1ms age bound, once Redis's
	// clock has moved past them (only Redis can tell: poll its TIME, with a
	// bounded deadline).
	last, err := client.XRevRangeN(ctx, "{"+ns+"}:stream", "+", "-", 1).Result()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		now, err := client.Time(ctx).Result()
		return err == nil && now.UnixMilli() > parseMs(last[0].ID)+1
	}, 5*time.Second, time.Millisecond)
	aged := newBroker(t, newClient(t), ns, redispubsub.Retention(1000, time.Millisecond), redispubsub.ExactRetention())
	publishN(t, ctx, aged, topic, 6, 6)
	n, err := client.XLen(ctx, "{"+ns+"}:stream").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "entries left after trimming by age")

	sub, err := b.Subscribe(ctx, topic, pubsub.FromOldest())
	require.NoError(t, err)
	defer sub.Close()
	expect(t, ctx, sub, 6, 6)
}

func parseMs(id string) int64 {
	var ms, seq int64
	fmt.Sscanf(id, "%d-%d", &ms, &seq)
	return ms
}

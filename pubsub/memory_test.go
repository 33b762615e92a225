package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/pubsub"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, b pubsub.Publisher, topic, data string) pubsub.Cursor {
	t.Helper()
	c, err := b.Publish(context.Background(), pubsub.Message{Topic: topic, Data: []byte(data)})
	require.NoError(t, err)
	return c
}

func TestHistoryExpiresByAge(t *testing.T) {
	ctx := testCtx(t)
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b := pubsub.NewBroker(pubsub.History(100, time.Minute), pubsub.WithClock(clk))
	defer b.Close()

	first := publish(t, b, "feed", "old")
	publish(t, b, "feed", "old too")
	clk.Advance(2 * time.Minute)
	publish(t, b, "feed", "fresh")

	sub, err := b.Subscribe(ctx, "feed", pubsub.FromOldest())
	require.NoError(t, err)
	defer sub.Close()
	m, err := sub.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "fresh", string(m.Data), "expired messages must not replay")
	assert.Equal(t, clk.Now(), m.Time, "message time comes from the broker's clock")

	resumed, err := b.Subscribe(ctx, "feed", pubsub.After(first))
	require.NoError(t, err)
	defer resumed.Close()
	_, err = resumed.Next(ctx)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "trimmed", gap.Reason)
	m, err = resumed.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "fresh", string(m.Data))
}

func TestHistoryOffReportsGapOnlyWhenSomethingWasMissed(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	keep, err := b.Subscribe(ctx, "room") // keeps the topic known
	require.NoError(t, err)
	defer keep.Close()

	last := publish(t, b, "room", "1")
	caughtUp, err := b.Subscribe(ctx, "room", pubsub.After(last))
	require.NoError(t, err)
	defer caughtUp.Close()
	publish(t, b, "room", "2")
	m, err := caughtUp.Next(ctx)
	require.NoError(t, err, "nothing was missed after the latest cursor")
	assert.Equal(t, "2", string(m.Data))

	behind, err := b.Subscribe(ctx, "room", pubsub.After(last))
	require.NoError(t, err)
	defer behind.Close()
	_, err = behind.Next(ctx)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "not retained", gap.Reason)
}

func TestStatsCountPublishedDeliveredDropped(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	fast, err := b.Subscribe(ctx, "a.b")
	require.NoError(t, err)
	defer fast.Close()
	slow, err := b.Subscribe(ctx, "a.*", pubsub.Buffer(2), pubsub.Overflow(pubsub.DropNewest))
	require.NoError(t, err)
	defer slow.Close()

	for i := range 5 {
		publish(t, b, "a.b", fmt.Sprint(i))
	}
	publish(t, b, "nobody.listens", "x")
	for range 5 {
		_, err := fast.Next(ctx)
		require.NoError(t, err)
	}
	for range 2 {
		_, err := slow.Next(ctx)
		require.NoError(t, err)
	}

	s := b.Stats()
	assert.Equal(t, 2, s.Subscribers)
	assert.EqualValues(t, 6, s.Published)
	assert.EqualValues(t, 7, s.Delivered)
	assert.EqualValues(t, 3, s.Dropped)
	ts := s.PerTopic["a.b"]
	assert.Equal(t, 1, ts.Subscribers, "wildcard subscriptions are not counted per topic")
	assert.EqualValues(t, 5, ts.Published)
	assert.EqualValues(t, 7, ts.Delivered)
	assert.EqualValues(t, 3, ts.Dropped)
	assert.EqualValues(t, 3, slow.(interface{ Dropped() uint64 }).Dropped())

	fast.Close()
	slow.Close()
	assert.Equal(t, 0, b.Stats().Subscribers)
	assert.EqualValues(t, 7, b.Stats().Delivered, "counters survive the topic")
}

func TestMaxMessageSize(t *testing.T) {
	b := pubsub.NewBroker(pubsub.MaxMessageSize(8))
	defer b.Close()
	_, err := b.Publish(context.Background(), pubsub.Message{Topic: "t", Data: make([]byte, 9)})
	assert.ErrorIs(t, err, pubsub.ErrTooLarge)
	_, err = b.Publish(context.Background(), pubsub.Message{Topic: "t", Data: make([]byte, 4), Header: map[string]string{"k": "vvvv"}})
	assert.ErrorIs(t, err, pubsub.ErrTooLarge, "header bytes count")
	_, err = b.Publish(context.Background(), pubsub.Message{Topic: "t", Data: make([]byte, 8)})
	assert.NoError(t, err)
}

func TestMaxTopicsEvictsIdleTopicsThenRefuses(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker(pubsub.History(10, 0), pubsub.MaxTopics(2))
	defer b.Close()
	busy1, err := b.Subscribe(ctx, "busy.1")
	require.NoError(t, err)
	defer busy1.Close()
	idle := publish(t, b, "idle", "x")
	publish(t, b, "new.1", "evicts idle") // idle had no subscriber
	assert.Equal(t, 2, b.Stats().Topics)

	// The evicted history is gone: a cursor into it reports a gap, not a
	// silent hole.
	resumed, err := b.Subscribe(ctx, "idle", pubsub.After(idle))
	require.NoError(t, err)
	_, err = resumed.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrGap)
	resumed.Close()

	busy2, err := b.Subscribe(ctx, "busy.2")
	require.NoError(t, err)
	defer busy2.Close()
	_, err = b.Publish(ctx, pubsub.Message{Topic: "new.2", Data: []byte("x")})
	assert.ErrorIs(t, err, pubsub.ErrTooManyTopics, "both topics have subscribers")
}

func TestEncodedOncePerMessage(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	var subs []pubsub.Subscription
	for range 10 {
		s, err := b.Subscribe(ctx, "t")
		require.NoError(t, err)
		defer s.Close()
		subs = append(subs, s)
	}
	publish(t, b, "t", "payload")
	type key struct{}
	var calls atomic.Int32
	for _, s := range subs {
		m, err := s.Next(ctx)
		require.NoError(t, err)
		got := m.Encoded(key{}, func(m *pubsub.Message) []byte {
			calls.Add(1)
			return []byte("<" + string(m.Data) + ">")
		})
		assert.Equal(t, "<payload>", string(got))
	}
	assert.EqualValues(t, 1, calls.Load())

	handMade := pubsub.Message{Data: []byte("x")}
	assert.Equal(t, "x!", string(handMade.Encoded(key{}, func(m *pubsub.Message) []byte { return append(m.Data, '!') })))
}

func TestBlockTimeoutOnTheBrokerClock(t *testing.T) {
	ctx := testCtx(t)
	clk := clock.NewFake(time.Unix(0, 0))
	b := pubsub.NewBroker(pubsub.WithClock(clk))
	defer b.Close()
	stuck, err := b.Subscribe(ctx, "t", pubsub.Buffer(1), pubsub.Overflow(pubsub.Block), pubsub.BlockTimeout(time.Second))
	require.NoError(t, err)
	defer stuck.Close()
	publish(t, b, "t", "fills the buffer")

	published := make(chan error, 1)
	go func() {
		_, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("waits")})
		published <- err
	}()
	require.NoError(t, clk.BlockUntilTimers(ctx, 1))
	select {
	case <-published:
		t.Fatal("Publish returned before the block timeout")
	default:
	}
	clk.Advance(time.Second)
	require.NoError(t, <-published)
	_, err = stuck.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrSlowConsumer, "a subscription that held up Publish too long is ended")
}

func TestPublishCanceledWhileBlocked(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	stuck, err := b.Subscribe(ctx, "t", pubsub.Buffer(1), pubsub.Overflow(pubsub.Block), pubsub.BlockTimeout(time.Hour))
	require.NoError(t, err)
	defer stuck.Close()
	publish(t, b, "t", "fills the buffer")
	pctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.Publish(pctx, pubsub.Message{Topic: "t"})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestNoAllocationPerDelivery(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	var subs []pubsub.Subscription
	for range 10 {
		s, err := b.Subscribe(ctx, "t", pubsub.Overflow(pubsub.DropOldest))
		require.NoError(t, err)
		defer s.Close()
		subs = append(subs, s)
	}
	buf := make([]pubsub.Message, 0, 16)
	m := pubsub.Message{Topic: "t", Data: []byte("x")}
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := b.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			if _, err := s.NextBatch(ctx, buf[:0]); err != nil {
				t.Fatal(err)
			}
		}
	})
	assert.LessOrEqual(t, allocs, 1.0, "one allocation per publish, none per delivery")
}

func TestCursorParse(t *testing.T) {
	tests := []struct {
		give    pubsub.Cursor
		epoch   string
		pos     pubsub.Position
		wantErr bool
	}{
		{give: "abc.42", epoch: "abc", pos: pubsub.Position{Lo: 42}},
		{give: "abc.1700000000000-3", epoch: "abc", pos: pubsub.Position{Hi: 1700000000000, Lo: 3}},
		{give: "a.b.7", epoch: "a.b", pos: pubsub.Position{Lo: 7}},
		{give: "", wantErr: true},
		{give: "abc", wantErr: true},
		{give: ".5", wantErr: true},
		{give: "abc.", wantErr: true},
		{give: "abc.-5", wantErr: true},
		{give: "abc.05", wantErr: true},
		{give: "abc.+5", wantErr: true},
		{give: "abc.5-", wantErr: true},
		{give: "abc.99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		epoch, pos, err := tt.give.Parse()
		if tt.wantErr {
			assert.ErrorIs(t, err, pubsub.ErrInvalidCursor, "Parse(%q)", tt.give)
			continue
		}
		require.NoError(t, err, "Parse(%q)", tt.give)
		assert.Equal(t, tt.epoch, epoch, "Parse(%q)", tt.give)
		assert.Equal(t, tt.pos, pos, "Parse(%q)", tt.give)
		assert.Equal(t, tt.give, pubsub.MakeCursor(epoch, pos), "round trip")
	}
	assert.True(t, pubsub.Position{Hi: 1}.Less(pubsub.Position{Hi: 2}))
	assert.True(t, pubsub.Position{Hi: 1, Lo: 9}.Less(pubsub.Position{Hi: 2}))
	assert.False(t, pubsub.Position{Lo: 3}.Less(pubsub.Position{Lo: 3}))
	assert.True(t, errors.Is(&pubsub.GapError{}, pubsub.ErrGap))
}

func TestHeadThenAfterMissesNothing(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	keep, err := b.Subscribe(ctx, "t")
	require.NoError(t, err)
	defer keep.Close()
	publish(t, b, "t", "before")
	head, err := b.Head(ctx)
	require.NoError(t, err)
	publish(t, b, "t", "between") // after Head, before the next Subscribe

	sub, err := b.Subscribe(ctx, "t", pubsub.After(head))
	require.NoError(t, err)
	defer sub.Close()
	_, err = sub.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrGap, "without history, what came between is reported, never silently lost")

	hb := pubsub.NewBroker(pubsub.History(10, 0))
	defer hb.Close()
	publish(t, hb, "t", "before")
	head, err = hb.Head(ctx)
	require.NoError(t, err)
	publish(t, hb, "t", "between")
	sub2, err := hb.Subscribe(ctx, "t", pubsub.After(head))
	require.NoError(t, err)
	defer sub2.Close()
	m, err := sub2.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "between", string(m.Data))

	empty := pubsub.NewBroker()
	c, err := empty.Head(ctx)
	require.NoError(t, err)
	_, _, err = c.Parse()
	assert.NoError(t, err, "the head of an empty broker is a valid cursor")
	empty.Close()
	_, err = empty.Head(ctx)
	assert.ErrorIs(t, err, pubsub.ErrClosed)
}

func TestDrainTakesWhatIsWaitingWithoutWaiting(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	sub, err := b.Subscribe(ctx, "t")
	require.NoError(t, err)
	defer sub.Close()
	got, err := pubsub.Drain(sub, nil)
	assert.ErrorIs(t, err, context.Canceled, "nothing waiting: it does not block")
	assert.Empty(t, got)
	publish(t, b, "t", "a")
	publish(t, b, "t", "b")
	got, err = pubsub.Drain(sub, make([]pubsub.Message, 0, 8))
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, "b", string(got[1].Data))
}

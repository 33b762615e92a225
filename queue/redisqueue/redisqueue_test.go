package redisqueue_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// events is a slog.Handler that reports the messages of the records it
// gets on a channel (dropping them when nobody listens), so a test can
// wait for what a Worker logs instead of sleeping.
type events chan string

func (e events) Enabled(context.Context, slog.Level) bool { return true }
func (e events) Handle(_ context.Context, r slog.Record) error {
	select {
	case e <- r.Message:
	default:
	}
	return nil
}
func (e events) WithAttrs([]slog.Attr) slog.Handler { return e }
func (e events) WithGroup(string) slog.Handler      { return e }

// The engine goes away under a running Worker (its connections cut, then
// refused for a while, then cut again) while a producer on another
// connection keeps enqueueing. The Worker keeps running, reconnects, and
// every enqueue that was acknowledged is processed.
func TestWorkerSurvivesEngineOutage(t *testing.T) {
	ctx, ns, name := testCtx(t), namespace(t), "outage"
	proxy, proxied := newProxied(t)
	consumer := newBackend(t, proxied, ns)
	producer := newBackend(t, newClient(t), ns)
	pq, err := queue.New(producer, name)
	require.NoError(t, err)
	cq, err := queue.New(consumer, name)
	require.NoError(t, err)

	var mu sync.Mutex
	acked := make(map[string]bool) // bodies whose enqueue was acknowledged
	enqueue := func(from, to int) {
		for i := from; i < to; i++ {
			body := strconv.Itoa(i)
			_, err := pq.Enqueue(ctx, queue.Message{Body: []byte(body)})
			require.NoError(t, err)
			mu.Lock()
			acked[body] = true
			mu.Unlock()
		}
	}

	gate := make(chan struct{}) // one token per handler call; closed: no limit
	processed := make(chan string, 4096)
	logs := make(events, 64)
	w := queue.NewWorker(cq, func(ctx context.Context, d queue.Delivery) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		processed <- string(d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 4, Lease: time.Second, Logger: slog.New(logs)})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	let := func(n int) { // let n handler calls through
		for range n {
			select {
			case gate <- struct{}{}:
			case err := <-ran:
				t.Fatalf("the worker stopped: %v", err)
			case <-ctx.Done():
				t.Fatal("the worker does not take messages")
			}
		}
	}
	waitLog := func(want string) {
		for {
			select {
			case m := <-logs:
				if strings.Contains(m, want) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("the worker never logged %q", want)
			}
		}
	}

	enqueue(0, 300)
	let(100)
	proxy.Cut() // connections reset under the worker
	let(100)

	proxy.Pause() // Redis is down for the worker
	// It notices: a receive, an ack, or the extension of a lease held by a
	// handler waiting at the gate fails.
	waitLog("failed")
	_, err = cq.Enqueue(ctx, queue.Message{Body: []byte("unacknowledged")})
	require.Error(t, err, "an enqueue while the engine is unreachable")
	enqueue(300, 500) // the producer, on its own connection, goes on
	proxy.Resume()
	let(100)
	proxy.Cut()
	close(gate)
	enqueue(500, 600)

	seen := make(map[string]bool)
	for len(seen) < len(acked) {
		select {
		case body := <-processed:
			seen[body] = true
		case err := <-ran:
			t.Fatalf("the worker stopped: %v", err)
		case <-ctx.Done():
			t.Fatalf("%d of %d acknowledged messages processed", len(seen), len(acked))
		}
	}
	for body := range acked {
		assert.True(t, seen[body], "acknowledged message %s was not processed", body)
	}
	require.NoError(t, w.Shutdown(ctx))
	require.NoError(t, <-ran)
	assert.Greater(t, proxy.Accepted(), 2, "the worker reconnected")
}

// Close ends a waiting Receive and every goroutine the backend started,
// fails later calls with ErrClosed, and leaves the caller's client open.
func TestCloseReleasesEverything(t *testing.T) {
	ctx, ns := testCtx(t), namespace(t)
	ignore := goleak.IgnoreCurrent()
	client := redis.NewClient(redisOptions(t))
	b, err := redisqueue.New(client, redisqueue.Options{Namespace: ns})
	require.NoError(t, err)
	q, err := queue.New(b, "close")
	require.NoError(t, err)

	_, err = q.Enqueue(ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	ds, err := q.Receive(ctx, queue.ReceiveOptions{})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.NoError(t, q.Ack(ctx, ds[0].Receipt)) // the ack batcher ran
	waiting := make(chan error, 1)
	go func() {
		_, err := q.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait}) // the wake-up listener runs
		waiting <- err
	}()

	require.NoError(t, b.Close())
	require.ErrorIs(t, <-waiting, queue.ErrClosed)
	_, err = q.Enqueue(ctx, queue.Message{Body: []byte("y")})
	assert.ErrorIs(t, err, queue.ErrClosed)
	_, err = q.Receive(ctx, queue.ReceiveOptions{Wait: time.Second})
	assert.ErrorIs(t, err, queue.ErrClosed)
	assert.ErrorIs(t, q.Ack(ctx, ds[0].Receipt), queue.ErrClosed)
	_, err = q.Stats(ctx)
	assert.ErrorIs(t, err, queue.ErrClosed)
	assert.NoError(t, b.Close(), "a second Close")
	assert.NoError(t, client.Ping(ctx).Err(), "the caller's client after Close")

	require.NoError(t, client.Close())
	goleak.VerifyNone(t, ignore)
}

// After every kind of traffic (priorities, delays, dedup keys, nacks,
// dead letters beyond their bound, redrive) and once every message is
// acked, what stays in Redis is a fixed set of keys per queue, each empty
// or bounded, plus dedup keys that expire.
func TestNoKeyGrowsWithoutBound(t *testing.T) {
	ctx, ns := testCtx(t), namespace(t)
	client := newClient(t)
	b := newBackend(t, client, ns, func(o *redisqueue.Options) { o.MaxDead = 3 })
	q, err := queue.New(b, "bounded")
	require.NoError(t, err)

	var msgs []queue.Message
	for i := range 20 {
		msgs = append(msgs, queue.Message{Body: []byte(strconv.Itoa(i)), Priority: i%3 - 1, DedupKey: "k" + strconv.Itoa(i%15)})
	}
	msgs = append(msgs, queue.Message{Body: []byte("delayed"), Delay: 10 * time.Millisecond})
	_, err = q.EnqueueBatch(ctx, msgs)
	require.NoError(t, err)
	dead := 0
	for done := 0; done < 16; {
		ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 4, Wait: 5 * time.Second})
		require.NoError(t, err)
		for _, d := range ds {
			switch {
			case d.Attempt == 1 && d.Priority == 0:
				require.NoError(t, q.Nack(ctx, d.Receipt, 0, "again"))
			case dead < 5 && d.Priority == 1:
				require.NoError(t, q.DeadLetter(ctx, d.Receipt, "dead"))
				dead++
				done++
			default:
				require.NoError(t, q.Ack(ctx, d.Receipt))
				done++
			}
		}
	}
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, st.Dead, "dead letters at their bound")
	assert.Equal(t, uint64(2), st.DeadDropped)
	n, err := q.Redrive(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	for st.Depth+st.InFlight+st.Delayed > 0 || n > 0 {
		ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 10, Wait: 5 * time.Second})
		require.NoError(t, err)
		for _, d := range ds {
			require.NoError(t, q.Ack(ctx, d.Receipt))
		}
		n = 0
		st, err = q.Stats(ctx)
		require.NoError(t, err)
	}

	p := "{" + ns + "}:q:bounded:"
	for _, k := range keysOf(t, client, ns) {
		suffix := strings.TrimPrefix(k, p)
		switch {
		case strings.HasPrefix(suffix, "d:"):
			ttl, err := client.PTTL(ctx, k).Result()
			require.NoError(t, err)
			assert.Positive(t, ttl, "dedup key %s expires", k)
		case strings.HasPrefix(suffix, "s:"):
			assert.Zero(t, client.XLen(ctx, k).Val(), "stream %s is empty once everything is acked", k)
			info, err := client.XInfoGroups(ctx, k).Result()
			require.NoError(t, err)
			require.Len(t, info, 1)
			assert.EqualValues(t, 1, info[0].Consumers, "one consumer name, however many processes")
			assert.Zero(t, info[0].Pending)
		case suffix == "dead":
			assert.Zero(t, client.XLen(ctx, k).Val(), "dead letters left after redriving all")
		case suffix == "levels", suffix == "meta":
		default:
			t.Errorf("key %s is left behind (type %s)", k, client.Type(ctx, k).Val())
		}
	}
}

// Messages leave the delay set for their stream when due, and a receive
// waiting meanwhile is woken by the due time, not by polling.
func TestWaitingReceiveWakesAtDueDelay(t *testing.T) {
	ctx, ns := testCtx(t), namespace(t)
	b := newBackend(t, newClient(t), ns)
	q, err := queue.New(b, "due")
	require.NoError(t, err)
	got := make(chan []queue.Delivery, 1)
	go func() {
		ds, _ := q.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
		got <- ds
	}()
	_, err = q.Enqueue(ctx, queue.Message{Body: []byte("later"), Delay: 100 * time.Millisecond})
	require.NoError(t, err)
	select {
	case ds := <-got:
		require.Len(t, ds, 1)
		assert.Equal(t, "later", string(ds[0].Body))
	case <-ctx.Done():
		t.Fatal("the waiting receive was not woken when the delay ended")
	}
}

// Two backends on one namespace are two nodes: what one enqueues, a
// receive waiting on the other gets at once.
func TestAcrossNodes(t *testing.T) {
	ctx, ns := testCtx(t), namespace(t)
	a := newBackend(t, newClient(t), ns)
	b := newBackend(t, newClient(t), ns)
	qa, err := queue.New(a, "shared")
	require.NoError(t, err)
	qb, err := queue.New(b, "shared")
	require.NoError(t, err)
	got := make(chan []queue.Delivery, 1)
	go func() {
		ds, _ := qb.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
		got <- ds
	}()
	r, err := qa.Enqueue(ctx, queue.Message{Body: []byte("hello"), Header: map[string]string{"from": "a"}})
	require.NoError(t, err)
	select {
	case ds := <-got:
		require.Len(t, ds, 1)
		assert.Equal(t, r.ID, ds[0].ID)
		assert.Equal(t, map[string]string{"from": "a"}, ds[0].Header)
		require.NoError(t, qa.Ack(ctx, ds[0].Receipt), "a receipt from one node holds on another")
	case <-ctx.Done():
		t.Fatal("the receive on node b was not woken by the enqueue on node a")
	}
}

func TestRejects(t *testing.T) {
	ctx, ns := testCtx(t), namespace(t)
	client := newClient(t)
	b := newBackend(t, client, ns, func(o *redisqueue.Options) { o.MaxMessageSize = 8; o.MaxDepth = 3 })
	q, err := queue.New(b, "rejects")
	require.NoError(t, err)

	_, err = q.Enqueue(ctx, queue.Message{Body: make([]byte, 9)})
	assert.ErrorIs(t, err, queue.ErrTooLarge)
	_, err = q.Enqueue(ctx, queue.Message{Body: []byte("1234"), Header: map[string]string{"k": "1234"}})
	assert.ErrorIs(t, err, queue.ErrTooLarge, "the header counts")
	_, err = q.EnqueueBatch(ctx, []queue.Message{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}, {Body: []byte("d")}})
	assert.ErrorIs(t, err, queue.ErrQueueFull)
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.Depth, "a batch refused stores nothing")

	for _, r := range []queue.Receipt{"x", "0/1-0", "0/1-0/0", "11/1-0/1", "0/1-x/1", "00/1-0/1", "0/1-0/1/2"} {
		err := q.Ack(ctx, r)
		assert.ErrorIs(t, err, queue.ErrInvalid, "receipt %q", r)
	}
	assert.ErrorIs(t, q.Ack(ctx, "0/1-0/1"), queue.ErrStaleReceipt, "a well-formed receipt of nothing")
	_, _, err = q.Dead(ctx, "not-a-cursor", 10)
	assert.ErrorIs(t, err, queue.ErrInvalid)

	for _, bad := range []string{"a{b", "c}"} {
		_, err := redisqueue.New(client, redisqueue.Options{Namespace: bad})
		assert.Error(t, err, "namespace %q", bad)
	}
	_, err = redisqueue.New(nil, redisqueue.Options{})
	assert.Error(t, err)
}

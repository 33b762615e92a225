package queue_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
)

// recorder reports the calls a worker makes, so tests wait on events.
type recorder struct {
	queue.Backend
	refuse   atomic.Bool // Extend fails with ErrStaleReceipt
	extended chan struct{}
	nacked   chan string
	acked    chan struct{}
	dead     chan string
}

func (r *recorder) Extend(ctx context.Context, q string, rc queue.Receipt, l time.Duration) error {
	if r.refuse.Load() {
		return queue.ErrStaleReceipt
	}
	err := r.Backend.Extend(ctx, q, rc, l)
	if err == nil {
		r.extended <- struct{}{}
	}
	return err
}

func (r *recorder) Nack(ctx context.Context, q string, rc queue.Receipt, d time.Duration, e string) error {
	err := r.Backend.Nack(ctx, q, rc, d, e)
	if err == nil {
		r.nacked <- e
	}
	return err
}

func (r *recorder) Ack(ctx context.Context, q string, rc queue.Receipt) error {
	err := r.Backend.Ack(ctx, q, rc)
	if err == nil {
		r.acked <- struct{}{}
	}
	return err
}

func (r *recorder) DeadLetter(ctx context.Context, q string, rc queue.Receipt, e string) error {
	err := r.Backend.DeadLetter(ctx, q, rc, e)
	if err == nil {
		r.dead <- e
	}
	return err
}

type fixture struct {
	t   *testing.T
	ctx context.Context
	clk *clock.Fake
	rec *recorder
	q   *queue.Queue // through the recorder
}

func newFixture(t *testing.T) *fixture {
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	mem := queue.NewMemory(queue.MemoryOptions{Clock: clk})
	t.Cleanup(func() { mem.Close() })
	rec := &recorder{Backend: mem, extended: make(chan struct{}, 100), nacked: make(chan string, 100), acked: make(chan struct{}, 100), dead: make(chan string, 100)}
	q, err := queue.New(rec, "jobs")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &fixture{t: t, ctx: ctx, clk: clk, rec: rec, q: q}
}

func (f *fixture) start(h queue.Handler, opts queue.WorkerOptions) (*queue.Worker, chan error) {
	opts.Clock = f.clk
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	w := queue.NewWorker(f.q, h, opts)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	return w, ran
}

func wait[T any](f *fixture, c <-chan T, what string) T {
	f.t.Helper()
	select {
	case v := <-c:
		return v
	case <-f.ctx.Done():
		f.t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func (f *fixture) stop(w *queue.Worker, ran chan error) {
	f.t.Helper()
	require.NoError(f.t, w.Shutdown(f.ctx))
	require.NoError(f.t, <-ran)
}

func TestWorkerExtendsTheLeaseWhileTheHandlerRuns(t *testing.T) {
	f := newFixture(t)
	started, release := make(chan struct{}), make(chan struct{})
	w, ran := f.start(func(context.Context, queue.Delivery) error {
		close(started)
		<-release
		return nil
	}, queue.WorkerOptions{Lease: 30 * time.Second, Timeout: -1})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("slow")})
	require.NoError(t, err)
	wait(f, started, "the handler to start")
	for range 6 { // three leases' worth of time, in steps of a third
		f.clk.Advance(10 * time.Second)
		// Every tick finds two thirds of the lease or less left: extend.
		wait(f, f.rec.extended, "an extension")
	}
	st, err := f.q.Stats(f.ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.InFlight, "still leased after three leases' time")
	assert.Equal(t, uint64(0), st.Retried)
	close(release)
	wait(f, f.rec.acked, "the ack")
	f.stop(w, ran)
	assert.Equal(t, uint64(1), w.Stats().Succeeded)
}

func TestWorkerRecoversPanicsAndRetriesWithBackoff(t *testing.T) {
	f := newFixture(t)
	w, ran := f.start(func(_ context.Context, d queue.Delivery) error {
		if d.Attempt == 1 {
			panic("kaboom")
		}
		return nil
	}, queue.WorkerOptions{RetryBase: time.Second, RetryMax: time.Second})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	lastErr := wait(f, f.rec.nacked, "the nack after the panic")
	assert.Contains(t, lastErr, "kaboom")
	f.clk.Advance(time.Second) // the backoff is at most RetryBase
	wait(f, f.rec.acked, "the retry's ack")
	f.stop(w, ran)
	st := w.Stats()
	assert.Equal(t, uint64(1), st.Panics)
	assert.Equal(t, uint64(1), st.Failed)
	assert.Equal(t, uint64(1), st.Retried)
	assert.Equal(t, uint64(1), st.Succeeded)
}

func TestWorkerTimesOutAHandler(t *testing.T) {
	f := newFixture(t)
	started := make(chan struct{}, 1)
	w, ran := f.start(func(ctx context.Context, _ queue.Delivery) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}, queue.WorkerOptions{Timeout: time.Second, MaxAttempts: 1})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	wait(f, started, "the handler to start")
	f.clk.Advance(time.Second)
	lastErr := wait(f, f.rec.dead, "the dead letter after the only attempt timed out")
	assert.Contains(t, lastErr, queue.ErrHandlerTimeout.Error())
	f.stop(w, ran)
	assert.Equal(t, uint64(1), w.Stats().TimedOut)
}

func TestWorkerShutdownWaitsForRunningHandlers(t *testing.T) {
	f := newFixture(t)
	started, release := make(chan struct{}), make(chan struct{})
	w, ran := f.start(func(context.Context, queue.Delivery) error {
		close(started)
		<-release
		return nil
	}, queue.WorkerOptions{})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	wait(f, started, "the handler to start")
	shut := make(chan error, 1)
	go func() { shut <- w.Shutdown(f.ctx) }()
	close(release)
	require.NoError(t, wait(f, shut, "shutdown"))
	require.NoError(t, wait(f, ran, "Run to return"))
	wait(f, f.rec.acked, "the ack") // the running handler finished and acked
}

func TestWorkerShutdownDeadlineGivesBackUnfinishedWorkAtOnce(t *testing.T) {
	f := newFixture(t)
	started, release := make(chan struct{}), make(chan struct{})
	w, ran := f.start(func(context.Context, queue.Delivery) error {
		close(started)
		<-release // ignores its context, as a stuck handler does
		return nil
	}, queue.WorkerOptions{})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	wait(f, started, "the handler to start")
	ended, cancel := context.WithCancel(f.ctx)
	cancel()
	require.ErrorIs(t, w.Shutdown(ended), context.Canceled)
	assert.Equal(t, queue.ErrWorkerStopped.Error(), wait(f, f.rec.nacked, "the give-back"))

	// Another consumer takes it at once, with no time passing.
	ds, err := f.q.Receive(f.ctx, queue.ReceiveOptions{})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	assert.Equal(t, 2, ds[0].Attempt)

	close(release)
	require.NoError(t, wait(f, ran, "Run to return"))
	assert.Equal(t, uint64(1), w.Stats().Abandoned)
	assert.Equal(t, uint64(0), w.Stats().Succeeded, "the late result is discarded")
}

func TestWorkerMiddlewareWrapsInOrder(t *testing.T) {
	f := newFixture(t)
	var trace []string
	mw := func(name string) queue.Middleware {
		return func(next queue.Handler) queue.Handler {
			return func(ctx context.Context, d queue.Delivery) error {
				trace = append(trace, name+">")
				err := next(ctx, d)
				trace = append(trace, "<"+name)
				return err
			}
		}
	}
	w, ran := f.start(func(context.Context, queue.Delivery) error {
		trace = append(trace, "handler")
		return nil
	}, queue.WorkerOptions{Concurrency: 1, Middleware: []queue.Middleware{mw("outer"), mw("inner")}})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	wait(f, f.rec.acked, "the ack")
	f.stop(w, ran)
	assert.Equal(t, "outer> inner> handler <inner <outer", strings.Join(trace, " "))
}

type email struct {
	To string `json:"to"`
}

func TestTypedDecodesJSONAndDeadLettersWhatDoesNotDecode(t *testing.T) {
	f := newFixture(t)
	emails := queue.Typed[email]{Queue: f.q}
	got := make(chan email, 1)
	w, ran := f.start(emails.Handler(func(_ context.Context, e email) error {
		got <- e
		return nil
	}), queue.WorkerOptions{})
	_, err := emails.Enqueue(f.ctx, email{To: "ada@example.com"}, queue.Message{})
	require.NoError(t, err)
	assert.Equal(t, email{To: "ada@example.com"}, wait(f, got, "the decoded value"))
	_, err = f.q.Enqueue(f.ctx, queue.Message{Body: []byte("{not json")})
	require.NoError(t, err)
	lastErr := wait(f, f.rec.dead, "the undecodable message to be dead-lettered")
	assert.Contains(t, lastErr, "decoding")
	f.stop(w, ran)
}

func TestWorkerRunsOnce(t *testing.T) {
	f := newFixture(t)
	w, ran := f.start(func(context.Context, queue.Delivery) error { return nil }, queue.WorkerOptions{})
	f.stop(w, ran)
	assert.ErrorIs(t, w.Run(context.Background()), queue.ErrWorkerStarted)
}

func TestWorkerRunEndsWithItsContext(t *testing.T) {
	f := newFixture(t)
	w := queue.NewWorker(f.q, func(context.Context, queue.Delivery) error { return nil },
		queue.WorkerOptions{Clock: f.clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(f.ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	cancel()
	assert.True(t, errors.Is(wait(f, ran, "Run to return"), context.Canceled))
}

// Handlers share one timeout timer: each still times out at its own
// deadline, the later one by the timer armed again after the first.
func TestWorkerTimesOutEachHandlerAtItsOwnDeadline(t *testing.T) {
	f := newFixture(t)
	start := f.clk.Now()
	type ended struct {
		body  string
		cause error
		at    time.Time
	}
	started, done := make(chan string, 2), make(chan ended, 2)
	w, ran := f.start(func(ctx context.Context, d queue.Delivery) error {
		started <- string(d.Body)
		<-ctx.Done()
		done <- ended{string(d.Body), context.Cause(ctx), f.clk.Now()}
		return ctx.Err()
	}, queue.WorkerOptions{Concurrency: 2, Timeout: 2 * time.Second, MaxAttempts: 1})
	_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte("a")})
	require.NoError(t, err)
	assert.Equal(t, "a", wait(f, started, "a to start"))
	f.clk.Advance(time.Second)
	_, err = f.q.Enqueue(f.ctx, queue.Message{Body: []byte("b")})
	require.NoError(t, err)
	assert.Equal(t, "b", wait(f, started, "b to start"))

	f.clk.Advance(time.Second)
	a := wait(f, done, "a to time out")
	assert.Equal(t, "a", a.body)
	assert.ErrorIs(t, a.cause, queue.ErrHandlerTimeout)
	f.clk.Advance(time.Second)
	b := wait(f, done, "b to time out")
	assert.Equal(t, "b", b.body)
	assert.ErrorIs(t, b.cause, queue.ErrHandlerTimeout)
	assert.Equal(t, start.Add(3*time.Second), b.at, "b timed out at its own deadline, not a's")
	wait(f, f.rec.dead, "a's dead letter")
	wait(f, f.rec.dead, "b's dead letter")
	f.stop(w, ran)
	assert.Equal(t, uint64(2), w.Stats().TimedOut)
}

// A handler that finishes takes its next message itself while a backlog
// waits; Shutdown stops that too: the worker takes nothing more.
func TestWorkerShutdownStopsTakingFromABacklog(t *testing.T) {
	f := newFixture(t)
	started, release := make(chan struct{}, 10), make(chan struct{})
	w, ran := f.start(func(context.Context, queue.Delivery) error {
		started <- struct{}{}
		<-release
		return nil
	}, queue.WorkerOptions{Concurrency: 1})
	_, err := f.q.EnqueueBatch(f.ctx, make([]queue.Message, 10))
	require.NoError(t, err)
	wait(f, started, "the first handler to start")
	shut := make(chan error, 1)
	go func() { shut <- w.Shutdown(f.ctx) }()
	// Shutdown has stopped receiving once Run can end; let the handler go.
	close(release)
	require.NoError(t, wait(f, shut, "shutdown"))
	require.NoError(t, wait(f, ran, "Run to return"))
	st, err := f.q.Stats(f.ctx)
	require.NoError(t, err)
	processed := int(w.Stats().Succeeded)
	assert.Equal(t, 10, processed+st.Depth, "every message is processed or still waiting")
	assert.Zero(t, st.InFlight, "nothing is left leased")
}

// With a backlog and one handler, messages are handled one at a time in
// order, each with its lease and settled once.
func TestWorkerDrainsABacklogInOrder(t *testing.T) {
	f := newFixture(t)
	got := make(chan string, 100)
	w, ran := f.start(func(_ context.Context, d queue.Delivery) error {
		got <- string(d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 1})
	var want []string
	msgs := make([]queue.Message, 50)
	for i := range msgs {
		msgs[i] = queue.Message{Body: []byte(strconv.Itoa(i))}
		want = append(want, strconv.Itoa(i))
	}
	_, err := f.q.EnqueueBatch(f.ctx, msgs)
	require.NoError(t, err)
	var order []string
	for range msgs {
		order = append(order, wait(f, got, "a message"))
		wait(f, f.rec.acked, "its ack")
	}
	f.stop(w, ran)
	assert.Equal(t, want, order)
	assert.Equal(t, uint64(50), w.Stats().Succeeded)
}

func TestWorkerKeepsPrefetchedLeasesAndGivesThemBackWhenStopping(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{"a", "b", "c"} {
		_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte(body)})
		require.NoError(t, err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	var ran []string
	w, done := f.start(func(_ context.Context, d queue.Delivery) error {
		ran = append(ran, string(d.Body))
		if string(d.Body) == "a" {
			close(started)
			<-release
		}
		return nil
	}, queue.WorkerOptions{Concurrency: 1, Prefetch: 2, Lease: 30 * time.Second, Timeout: -1})
	wait(f, started, "the handler to start")
	st, err := f.q.Stats(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 3, st.InFlight, "one running, two prefetched in the same receive")

	for range 6 { // two leases' worth of time, in steps of a third
		f.clk.Advance(10 * time.Second)
		for range 3 { // the running message's lease and both waiting ones
			wait(f, f.rec.extended, "a lease extension")
		}
	}
	st, err = f.q.Stats(f.ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, st.InFlight, "every lease kept")
	assert.Zero(t, st.Retried, "nothing delivered again")

	stopped := make(chan error, 1)
	go func() { stopped <- w.Shutdown(f.ctx) }()
	for range 2 {
		assert.Equal(t, queue.ErrWorkerStopped.Error(), wait(f, f.rec.nacked, "a prefetched message given back"))
	}
	st, err = f.q.Stats(f.ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, st.Depth, "given back while the running handler still runs")
	close(release)
	require.NoError(t, wait(f, stopped, "Shutdown"))
	require.NoError(t, <-done)
	assert.Equal(t, []string{"a"}, ran)
	assert.Equal(t, uint64(2), w.Stats().Abandoned)
	assert.Equal(t, uint64(1), w.Stats().Succeeded)
}

// batching is an engine-like backend with AckBatch: the Worker hands its
// acks to its acker, which sends them in batches.
type batching struct {
	queue.Backend
	calls, acked atomic.Int64
	gate         chan struct{} // the first call waits for it
}

func (b *batching) AckBatch(ctx context.Context, q string, rs []queue.Receipt) []error {
	if b.calls.Add(1) == 1 {
		<-b.gate
	}
	errs := b.Backend.(queue.BatchAcker).AckBatch(ctx, q, rs)
	for _, err := range errs {
		if err == nil {
			b.acked.Add(1)
		}
	}
	if errs == nil {
		b.acked.Add(int64(len(rs)))
	}
	return errs
}

// numbered returns the queue "jobs" of b holding n messages, whose bodies
// are 0 to n-1.
func numbered(t *testing.T, b queue.Backend, n int) *queue.Queue {
	t.Helper()
	q, err := queue.New(b, "jobs")
	require.NoError(t, err)
	msgs := make([]queue.Message, n)
	for i := range msgs {
		msgs[i] = queue.Message{Body: []byte(strconv.Itoa(i))}
	}
	_, err = q.EnqueueBatch(context.Background(), msgs)
	require.NoError(t, err)
	return q
}

func TestWorkerSendsAcksInBatchesAndFlushesThemOnShutdown(t *testing.T) {
	mem := queue.NewMemory(queue.MemoryOptions{})
	t.Cleanup(func() { mem.Close() })
	all := make(chan struct{})
	b := &batching{Backend: mem, gate: all}
	ctx := context.Background()
	const n = 500
	q := numbered(t, b, n)

	var handled atomic.Int64
	w := queue.NewWorker(q, func(context.Context, queue.Delivery) error {
		if handled.Add(1) == n {
			close(all)
		}
		return nil
	}, queue.WorkerOptions{Concurrency: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	<-all
	require.NoError(t, w.Shutdown(ctx))
	require.NoError(t, <-ran)

	assert.Equal(t, uint64(n), w.Stats().Succeeded, "every ack sent before Run returned")
	assert.Equal(t, int64(n), b.acked.Load())
	// The first batch was held until every handler had returned: the
	// acks gathered meanwhile went in one more, and each of the 4
	// handlers may have handed over its last ack just after.
	assert.LessOrEqual(t, b.calls.Load(), int64(1+1+4))
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(n), st.Processed)
	assert.Zero(t, st.InFlight)
}

func TestWorkerWithPrefetchOnMemoryProcessesEachMessageOnce(t *testing.T) {
	mem := queue.NewMemory(queue.MemoryOptions{})
	t.Cleanup(func() { mem.Close() })
	ctx := context.Background()
	const n = 300
	q := numbered(t, mem, n)
	var mu sync.Mutex
	seen := make(map[string]int)
	all := make(chan struct{})
	w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		seen[string(d.Body)]++
		if len(seen) == n {
			close(all)
		}
		return nil
	}, queue.WorkerOptions{Concurrency: 2, Prefetch: 8, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	<-all
	require.NoError(t, w.Shutdown(ctx))
	require.NoError(t, <-ran)
	for body, times := range seen {
		assert.Equal(t, 1, times, body)
	}
	assert.Equal(t, uint64(n), w.Stats().Succeeded)
}

func TestWorkerSkipsAPrefetchedMessageWhoseLeaseWasLost(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{"a", "b"} {
		_, err := f.q.Enqueue(f.ctx, queue.Message{Body: []byte(body)})
		require.NoError(t, err)
	}
	type call struct {
		body    string
		attempt int
	}
	calls := make(chan call, 10)
	started, returned := make(chan struct{}), make(chan struct{})
	w, ran := f.start(func(ctx context.Context, d queue.Delivery) error {
		calls <- call{string(d.Body), d.Attempt}
		if string(d.Body) == "a" && d.Attempt == 1 {
			defer close(returned)
			close(started)
			<-ctx.Done() // ends when its lease is found lost
			return context.Cause(ctx)
		}
		return nil
	}, queue.WorkerOptions{Concurrency: 1, Prefetch: 1, Lease: 30 * time.Second, Timeout: -1})
	wait(f, started, "the first handler")
	// The keeper's first round finds both leases lost (as if another
	// consumer had them): the running message's and the waiting one's.
	f.rec.refuse.Store(true)
	f.clk.Advance(10 * time.Second)
	wait(f, returned, "the first handler to end")
	f.rec.refuse.Store(false)
	// The leases run out: both messages are delivered again, once the
	// receive loop waits for them (its deadline and the queue's lease
	// timer armed, beside the keeper's ticker).
	require.NoError(t, f.clk.BlockUntilTimers(f.ctx, 3))
	f.clk.Advance(20 * time.Second)

	got := []call{wait(f, calls, "the first call")}
	for range 2 {
		got = append(got, wait(f, calls, "a call after the leases ran out"))
	}
	assert.ElementsMatch(t, []call{{"a", 1}, {"a", 2}, {"b", 2}}, got,
		"b's first delivery was lost while it waited: no handler ran it")
	f.stop(w, ran)
	assert.Equal(t, uint64(2), w.Stats().LeaseLost)
}

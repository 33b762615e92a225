// Package queuetest is the conformance and crash suite that every queue
// backend must pass: the memory backend and the PostgreSQL, Redis and NATS
// ones alike. It checks the contract written on queue.Backend through the
// portable queue.Queue and queue.Worker, so that code moves between
// backends by swapping one constructor.
//
// A backend's test calls Run with a constructor of fresh backends and says
// how the backend keeps time:
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T, clk *clock.Fake) queue.Backend {
//			return queue.NewMemory(queue.MemoryOptions{Clock: clk})
//		}, queuetest.Options{})
//	}
//
// With Options.RealTime false (the default) the constructor gets a fake
// clock that the backend must use for leases, delays, waits and its
// deduplication window; the suite moves it by hand, so nothing waits on real
// time. An engine that keeps its own time (Redis, NATS, PostgreSQL's now())
// sets RealTime: the constructor gets nil and the suite runs the same cases
// with short real leases and delays (Options.Lease). Then, and only then,
// the suite lets real time pass where a lease or a delay must run out; it
// never sleeps to wait for an event, and asserts no durations.
//
// Every subtest uses a queue of its own, named with a random token, so
// backends that share an engine need no cleaning between runs. The suite
// closes every backend it asks for when the subtest that asked ends.
package queuetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
)

// Options says how the backend under test keeps time.
type Options struct {
	// RealTime declares a backend that keeps its own time: it is given no
	// clock and the suite uses real leases and delays of Lease.
	RealTime bool
	// Lease is the lease and the unit delay of a RealTime run. Zero means
	// 500ms. Ignored with the fake clock (the suite uses 30s of fake time).
	Lease time.Duration
	// DedupWindow is the backend's deduplication window. Zero means
	// queue.DefaultDedupWindow. With RealTime, keep it short: the suite
	// waits it out once.
	DedupWindow time.Duration
}

// safetyNet bounds every wait, only so that a broken backend fails instead
// of hanging. No test expects it to expire.
const safetyNet = 20 * time.Second

// Run runs the suite on the backends newBackend returns. clk is the fake
// clock the backend must use, or nil with Options.RealTime.
func Run(t *testing.T, newBackend func(t *testing.T, clk *clock.Fake) queue.Backend, opts Options) {
	if newBackend == nil {
		t.Fatal("queuetest: newBackend is nil")
	}
	if opts.Lease <= 0 {
		opts.Lease = 500 * time.Millisecond
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = queue.DefaultDedupWindow
	}
	s := &suite{newBackend: newBackend, opts: opts}
	t.Run("Enqueue", s.testEnqueue)
	t.Run("Lease", s.testLease)
	t.Run("Receipt", s.testReceipt)
	t.Run("BatchCalls", s.testBatchCalls)
	t.Run("Delay", s.testDelay)
	t.Run("Dedup", s.testDedup)
	t.Run("DeadLetter", s.testDeadLetter)
	t.Run("LongPoll", s.testLongPoll)
	t.Run("PauseAndStats", s.testPauseAndStats)
	t.Run("Concurrency", s.testConcurrency)
	t.Run("Crash", s.testCrash)
	t.Run("Worker", s.testWorker)
	t.Run("Close", s.testClose)
}

type suite struct {
	newBackend func(t *testing.T, clk *clock.Fake) queue.Backend
	opts       Options
}

// env is one subtest's backend, queue and time.
type env struct {
	t     *testing.T
	b     queue.Backend
	clk   *clock.Fake // nil in real time
	q     *queue.Queue
	lease time.Duration // the unit of leases and delays
	ctx   context.Context
}

func (s *suite) env(t *testing.T) *env {
	t.Helper()
	var clk *clock.Fake
	lease := s.opts.Lease
	if !s.opts.RealTime {
		clk = clock.NewFake(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
		lease = 30 * time.Second
	}
	b := s.newBackend(t, clk)
	require.NotNil(t, b, "the constructor returned a nil Backend")
	t.Cleanup(func() { _ = b.Close() })
	q, err := queue.New(b, "qt-"+token())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), safetyNet)
	t.Cleanup(cancel)
	return &env{t: t, b: b, clk: clk, q: q, lease: lease, ctx: ctx}
}

func token() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// pass lets d of the backend's time pass: the fake clock moves; in real
// time, the suite waits, because a lease or a delay has to run out.
func (e *env) pass(d time.Duration) {
	if e.clk != nil {
		e.clk.Advance(d)
		return
	}
	time.Sleep(d)
}

// slack is how long after a due time a real-time backend may take to make
// a message visible; a receive waits up to it and returns as soon as the
// message is there.
func (e *env) slack() time.Duration {
	if e.clk != nil {
		return 0
	}
	return 10 * e.lease
}

func (e *env) enqueue(bodies ...string) []string {
	e.t.Helper()
	ids := make([]string, len(bodies))
	for i, b := range bodies {
		r, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte(b)})
		require.NoError(e.t, err)
		ids[i] = r.ID
	}
	return ids
}

// receive takes up to max messages with the suite's lease, waiting up to
// wait for the first.
func (e *env) receive(max int, wait time.Duration) []queue.Delivery {
	e.t.Helper()
	ds, err := e.q.Receive(e.ctx, queue.ReceiveOptions{Max: max, Lease: e.lease, Wait: wait})
	require.NoError(e.t, err)
	return ds
}

// receiveOne expects exactly one message, visible now or within slack.
func (e *env) receiveOne() queue.Delivery {
	e.t.Helper()
	ds := e.receive(1, e.slack())
	require.Len(e.t, ds, 1, "want one message")
	return ds[0]
}

func (e *env) expectEmpty() {
	e.t.Helper()
	ds := e.receive(10, 0)
	require.Empty(e.t, ds, "want no visible message, got %d", len(ds))
}

func bodies(ds []queue.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Body)
	}
	return out
}

func (s *suite) testEnqueue(t *testing.T) {
	t.Run("delivers body, header, id, attempt 1 and enqueue time", func(t *testing.T) {
		e := s.env(t)
		r, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte("hello"), Header: map[string]string{"k": "v"}})
		require.NoError(t, err)
		require.NotEmpty(t, r.ID)
		assert.False(t, r.Duplicate)
		d := e.receiveOne()
		assert.Equal(t, r.ID, d.ID)
		assert.Equal(t, "hello", string(d.Body))
		assert.Equal(t, map[string]string{"k": "v"}, d.Header)
		assert.Equal(t, 1, d.Attempt)
		assert.False(t, d.EnqueuedAt.IsZero())
		assert.NotEmpty(t, d.Receipt)
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
		e.expectEmpty()
	})
	t.Run("FIFO within a priority, higher priority first", func(t *testing.T) {
		e := s.env(t)
		var msgs []queue.Message
		var want []string
		for i := range 6 {
			msgs = append(msgs, queue.Message{Body: []byte("low" + strconv.Itoa(i))})
		}
		for i := range 3 {
			msgs = append(msgs, queue.Message{Body: []byte("high" + strconv.Itoa(i)), Priority: 5})
			want = append(want, "high"+strconv.Itoa(i))
		}
		msgs = append(msgs, queue.Message{Body: []byte("lowest"), Priority: -1})
		for i := range 6 {
			want = append(want, "low"+strconv.Itoa(i))
		}
		want = append(want, "lowest")
		_, err := e.q.EnqueueBatch(e.ctx, msgs)
		require.NoError(t, err)
		var got []string
		for len(got) < len(want) {
			ds := e.receive(3, e.slack())
			require.NotEmpty(t, ds, "got %v so far, want %v", got, want)
			got = append(got, bodies(ds)...)
		}
		assert.Equal(t, want, got)
	})
	t.Run("batch enqueue and receive", func(t *testing.T) {
		e := s.env(t)
		msgs := make([]queue.Message, 50)
		var want []string
		for i := range msgs {
			msgs[i] = queue.Message{Body: []byte(fmt.Sprintf("m%02d", i))}
			want = append(want, fmt.Sprintf("m%02d", i))
		}
		res, err := e.q.EnqueueBatch(e.ctx, msgs)
		require.NoError(t, err)
		require.Len(t, res, 50)
		seen := map[string]bool{}
		for _, r := range res {
			assert.False(t, seen[r.ID], "duplicate id %s", r.ID)
			seen[r.ID] = true
		}
		var got []string
		for len(got) < 50 {
			ds := e.receive(20, e.slack())
			require.NotEmpty(t, ds)
			require.LessOrEqual(t, len(ds), 20)
			for _, d := range ds {
				assert.Equal(t, 1, d.Attempt)
				require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
			}
			got = append(got, bodies(ds)...)
		}
		assert.Equal(t, want, got)
		e.expectEmpty()
	})
	t.Run("rejects out-of-bounds input with ErrInvalid", func(t *testing.T) {
		e := s.env(t)
		for _, m := range []queue.Message{
			{Delay: -time.Second},
			{Delay: time.Second, RunAt: time.Now()},
			{Priority: queue.MaxPriority + 1},
			{Header: map[string]string{"": "x"}},
		} {
			_, err := e.q.Enqueue(e.ctx, m)
			assert.ErrorIs(t, err, queue.ErrInvalid, "message %+v", m)
		}
		_, err := e.q.Receive(e.ctx, queue.ReceiveOptions{Max: queue.MaxBatch + 1})
		assert.ErrorIs(t, err, queue.ErrInvalid)
	})
}

func (s *suite) testLease(t *testing.T) {
	t.Run("a leased message is not delivered again while the lease holds", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		d := e.receiveOne()
		e.expectEmpty()
		if e.clk != nil {
			e.pass(e.lease - time.Millisecond)
			e.expectEmpty()
		}
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
	})
	t.Run("lease expiry makes it visible again with attempt+1", func(t *testing.T) {
		e := s.env(t)
		id := e.enqueue("a")[0]
		first := e.receiveOne()
		e.pass(e.lease)
		d := e.receiveOne()
		assert.Equal(t, id, d.ID)
		assert.Equal(t, 2, d.Attempt)
		assert.Equal(t, first.EnqueuedAt, d.EnqueuedAt, "EnqueuedAt is the first enqueue")
		assert.NotEqual(t, first.Receipt, d.Receipt)
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
	})
	t.Run("extend keeps it", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		d := e.receiveOne()
		// Extend every quarter lease, five times: past the first lease, and
		// with three quarters of a lease to spare for a stalled machine.
		for range 5 {
			e.pass(e.lease / 4)
			require.NoError(t, e.q.Extend(e.ctx, d.Receipt, e.lease))
		}
		e.expectEmpty()
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt), "the receipt holds after extensions past the first lease")
	})
	t.Run("nack with delay hides it until due, then attempt+1 with the last error", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		d := e.receiveOne()
		require.NoError(t, e.q.Nack(e.ctx, d.Receipt, 2*e.lease, "boom"))
		e.expectEmpty()
		if e.clk != nil {
			e.pass(2*e.lease - time.Millisecond)
			e.expectEmpty()
			e.pass(time.Millisecond)
		} else {
			e.pass(2 * e.lease)
		}
		d2 := e.receiveOne()
		assert.Equal(t, d.ID, d2.ID)
		assert.Equal(t, 2, d2.Attempt)
		assert.Equal(t, "boom", d2.LastError)
	})
	t.Run("nack without delay makes it visible at once", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		d := e.receiveOne()
		require.NoError(t, e.q.Nack(e.ctx, d.Receipt, 0, "again"))
		d2 := e.receiveOne()
		assert.Equal(t, 2, d2.Attempt)
	})
}

func (s *suite) testReceipt(t *testing.T) {
	t.Run("rejected after the message was delivered again", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		old := e.receiveOne()
		e.pass(e.lease)
		d := e.receiveOne()
		for name, call := range map[string]func() error{
			"ack":         func() error { return e.q.Ack(e.ctx, old.Receipt) },
			"nack":        func() error { return e.q.Nack(e.ctx, old.Receipt, 0, "") },
			"extend":      func() error { return e.q.Extend(e.ctx, old.Receipt, e.lease) },
			"dead-letter": func() error { return e.q.DeadLetter(e.ctx, old.Receipt, "") },
		} {
			assert.ErrorIs(t, call(), queue.ErrStaleReceipt, name)
		}
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt), "the new receipt still holds")
	})
	t.Run("rejected once the lease has passed", func(t *testing.T) {
		if s.opts.RealTime {
			t.Skip("real-time backends are checked after redelivery instead")
		}
		e := s.env(t)
		e.enqueue("a")
		d := e.receiveOne()
		e.pass(e.lease)
		assert.ErrorIs(t, e.q.Ack(e.ctx, d.Receipt), queue.ErrStaleReceipt)
		assert.ErrorIs(t, e.q.Extend(e.ctx, d.Receipt, e.lease), queue.ErrStaleReceipt)
	})
	t.Run("rejected after ack", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		d := e.receiveOne()
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
		assert.ErrorIs(t, e.q.Ack(e.ctx, d.Receipt), queue.ErrStaleReceipt)
	})
	t.Run("a made-up receipt is refused", func(t *testing.T) {
		e := s.env(t)
		err := e.q.Ack(e.ctx, "not-a-receipt")
		require.Error(t, err)
		assert.True(t, errors.Is(err, queue.ErrStaleReceipt) || errors.Is(err, queue.ErrInvalid), "got %v", err)
	})
}

func (s *suite) testBatchCalls(t *testing.T) {
	t.Run("AckBatch acks what it holds and reports each stale receipt in its place", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a", "b", "c")
		ds := e.receive(3, e.slack())
		require.Len(t, ds, 3)
		require.NoError(t, e.q.Ack(e.ctx, ds[1].Receipt))
		err := e.q.AckBatch(e.ctx, ds[0].Receipt, ds[1].Receipt, ds[2].Receipt)
		var be *queue.BatchError
		require.ErrorAs(t, err, &be)
		require.Len(t, be.Errs, 3)
		assert.NoError(t, be.Errs[0])
		assert.ErrorIs(t, be.Errs[1], queue.ErrStaleReceipt)
		assert.NoError(t, be.Errs[2])
		assert.ErrorIs(t, err, queue.ErrStaleReceipt)
		for _, d := range ds {
			assert.ErrorIs(t, e.q.Ack(e.ctx, d.Receipt), queue.ErrStaleReceipt, "acked once")
		}
		e.expectEmpty()
		require.NoError(t, e.q.AckBatch(e.ctx), "an empty batch")
	})
	t.Run("AckBatch refuses a receipt whose message was delivered again", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		old := e.receiveOne()
		e.pass(e.lease)
		cur := e.receiveOne()
		assert.ErrorIs(t, e.q.AckBatch(e.ctx, old.Receipt), queue.ErrStaleReceipt)
		require.NoError(t, e.q.AckBatch(e.ctx, cur.Receipt))
		e.expectEmpty()
	})
	t.Run("ReceiveAppend appends after what the slice holds", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a", "b")
		keep := []queue.Delivery{{ID: "mine"}}
		got, err := e.q.ReceiveAppend(e.ctx, keep, queue.ReceiveOptions{Max: 2, Lease: e.lease, Wait: e.slack()})
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(got), 2)
		assert.Equal(t, "mine", got[0].ID)
		for len(got) < 3 { // a real-time engine may hand them over one at a time
			got, err = e.q.ReceiveAppend(e.ctx, got, queue.ReceiveOptions{Max: 1, Lease: e.lease, Wait: e.slack()})
			require.NoError(t, err)
		}
		assert.Equal(t, []string{"", "a", "b"}, bodies(got))
		for _, d := range got[1:] {
			require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
		}
		empty, err := e.q.ReceiveAppend(e.ctx, got[:1], queue.ReceiveOptions{Max: 2, Lease: e.lease})
		require.NoError(t, err)
		assert.Len(t, empty, 1, "nothing visible: the slice comes back as it went")
	})
}

func (s *suite) testDelay(t *testing.T) {
	t.Run("a delayed message is invisible until due", func(t *testing.T) {
		e := s.env(t)
		_, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte("later"), Delay: 2 * e.lease})
		require.NoError(t, err)
		_, err = e.q.Enqueue(e.ctx, queue.Message{Body: []byte("now")})
		require.NoError(t, err)
		now := e.receiveOne()
		assert.Equal(t, "now", string(now.Body))
		require.NoError(t, e.q.Ack(e.ctx, now.Receipt))
		e.expectEmpty()
		if e.clk != nil {
			e.pass(2*e.lease - time.Millisecond)
			e.expectEmpty()
			e.pass(time.Millisecond)
		} else {
			e.pass(2 * e.lease)
		}
		d := e.receiveOne()
		assert.Equal(t, "later", string(d.Body))
		assert.Equal(t, 1, d.Attempt)
	})
	t.Run("RunAt in the past is visible at once", func(t *testing.T) {
		e := s.env(t)
		_, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte("x"), RunAt: time.Unix(0, 0)})
		require.NoError(t, err)
		e.receiveOne()
	})
	if !s.opts.RealTime {
		t.Run("RunAt in the future waits for it", func(t *testing.T) {
			e := s.env(t)
			_, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte("x"), RunAt: e.clk.Now().Add(time.Hour)})
			require.NoError(t, err)
			e.pass(time.Hour - time.Millisecond)
			e.expectEmpty()
			e.pass(time.Millisecond)
			e.receiveOne()
		})
	}
}

func (s *suite) testDedup(t *testing.T) {
	t.Run("a duplicate within the window is dropped, after it is new", func(t *testing.T) {
		e := s.env(t)
		m := queue.Message{Body: []byte("x"), DedupKey: "order-42"}
		first, err := e.q.Enqueue(e.ctx, m)
		require.NoError(t, err)
		dup, err := e.q.Enqueue(e.ctx, m)
		require.NoError(t, err)
		assert.Equal(t, queue.EnqueueResult{ID: first.ID, Duplicate: true}, dup)
		res, err := e.q.EnqueueBatch(e.ctx, []queue.Message{m, {Body: []byte("y"), DedupKey: "other"}, {Body: []byte("z"), DedupKey: "other"}})
		require.NoError(t, err)
		assert.True(t, res[0].Duplicate)
		assert.Equal(t, first.ID, res[0].ID)
		assert.False(t, res[1].Duplicate)
		assert.Equal(t, queue.EnqueueResult{ID: res[1].ID, Duplicate: true}, res[2], "a duplicate within one batch")
		d := e.receiveOne()
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
		d = e.receiveOne()
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
		e.expectEmpty()
		again, err := e.q.Enqueue(e.ctx, m)
		require.NoError(t, err)
		assert.True(t, again.Duplicate, "still a duplicate after the first was acked, within the window")

		e.pass(s.opts.DedupWindow + time.Millisecond)
		later, err := e.q.Enqueue(e.ctx, m)
		require.NoError(t, err)
		assert.False(t, later.Duplicate, "after the window")
		assert.NotEqual(t, first.ID, later.ID)
	})
}

func (s *suite) testDeadLetter(t *testing.T) {
	t.Run("dead letters are listed with attempts and last error, and redriven by id and all", func(t *testing.T) {
		e := s.env(t)
		ids := e.enqueue("a", "b", "c")
		for i := range 3 {
			for attempt := 1; attempt <= 2; attempt++ {
				d := e.receiveOne()
				require.Equal(t, ids[i], d.ID)
				require.Equal(t, attempt, d.Attempt)
				if attempt < 2 {
					require.NoError(t, e.q.Nack(e.ctx, d.Receipt, 0, "try "+strconv.Itoa(attempt)))
					continue
				}
				require.NoError(t, e.q.DeadLetter(e.ctx, d.Receipt, "gave up on "+string(d.Body)))
				assert.ErrorIs(t, e.q.Ack(e.ctx, d.Receipt), queue.ErrStaleReceipt)
			}
		}
		e.expectEmpty()
		st, err := e.q.Stats(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, st.Dead)

		var dead []queue.DeadMessage
		cursor := ""
		for range 10 {
			page, next, err := e.q.Dead(e.ctx, cursor, 2)
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), 2)
			dead = append(dead, page...)
			if next == "" {
				break
			}
			cursor = next
		}
		require.Len(t, dead, 3)
		for i, dm := range dead {
			assert.Equal(t, ids[i], dm.ID)
			assert.Equal(t, 2, dm.Attempts)
			assert.Equal(t, "gave up on "+string(dm.Body), dm.LastError)
			assert.False(t, dm.DeadAt.IsZero())
		}

		n, err := e.q.Redrive(e.ctx, ids[1], "no-such-id")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		d := e.receiveOne()
		assert.Equal(t, ids[1], d.ID)
		assert.Equal(t, 1, d.Attempt, "redrive starts the attempts again")
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))

		n, err = e.q.Redrive(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		got := e.receive(10, e.slack())
		if len(got) < 2 {
			got = append(got, e.receive(10, e.slack())...)
		}
		assert.ElementsMatch(t, []string{"a", "c"}, bodies(got))
		dead, _, err = e.q.Dead(e.ctx, "", 10)
		require.NoError(t, err)
		assert.Empty(t, dead)
	})
}

func (s *suite) testLongPoll(t *testing.T) {
	t.Run("a waiting receive wakes on enqueue", func(t *testing.T) {
		e := s.env(t)
		got := make(chan []queue.Delivery, 1)
		go func() {
			ds, _ := e.q.Receive(e.ctx, queue.ReceiveOptions{Lease: e.lease, Wait: queue.MaxWait})
			got <- ds
		}()
		if e.clk != nil {
			// The receive has armed its deadline timer: it is waiting. The
			// clock does not move, so only the enqueue can wake it.
			require.NoError(t, e.clk.BlockUntilTimers(e.ctx, 1))
		}
		e.enqueue("wake")
		select {
		case ds := <-got:
			require.Len(t, ds, 1)
			assert.Equal(t, "wake", string(ds[0].Body))
		case <-e.ctx.Done():
			t.Fatal("the waiting receive was not woken by the enqueue")
		}
	})
	t.Run("a waiting receive wakes when a lease runs out", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a")
		e.receiveOne()
		got := make(chan []queue.Delivery, 1)
		go func() {
			ds, _ := e.q.Receive(e.ctx, queue.ReceiveOptions{Lease: e.lease, Wait: queue.MaxWait})
			got <- ds
		}()
		if e.clk != nil {
			require.NoError(t, e.clk.BlockUntilTimers(e.ctx, 1))
			e.clk.Advance(e.lease)
		}
		select {
		case ds := <-got:
			require.Len(t, ds, 1)
			assert.Equal(t, 2, ds[0].Attempt)
		case <-e.ctx.Done():
			t.Fatal("the waiting receive was not woken when the lease ran out")
		}
	})
	t.Run("returns empty at its deadline", func(t *testing.T) {
		e := s.env(t)
		got := make(chan error, 1)
		go func() {
			ds, err := e.q.Receive(e.ctx, queue.ReceiveOptions{Wait: e.lease})
			if err == nil && len(ds) > 0 {
				err = fmt.Errorf("got %d messages from an empty queue", len(ds))
			}
			got <- err
		}()
		if e.clk != nil {
			require.NoError(t, e.clk.BlockUntilTimers(e.ctx, 1))
			e.clk.Advance(e.lease)
		}
		select {
		case err := <-got:
			require.NoError(t, err)
		case <-e.ctx.Done():
			t.Fatal("the receive did not return at its deadline")
		}
	})
	t.Run("ends with its context", func(t *testing.T) {
		e := s.env(t)
		ctx, cancel := context.WithCancel(e.ctx)
		got := make(chan error, 1)
		go func() {
			_, err := e.q.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
			got <- err
		}()
		if e.clk != nil {
			require.NoError(t, e.clk.BlockUntilTimers(e.ctx, 1))
		}
		cancel()
		select {
		case err := <-got:
			require.ErrorIs(t, err, context.Canceled)
		case <-e.ctx.Done():
			t.Fatal("the receive did not end with its context")
		}
		// A message enqueued now is not lost to the departed receiver.
		e.enqueue("after")
		e.receiveOne()
	})
}

func (s *suite) testPauseAndStats(t *testing.T) {
	t.Run("a paused queue delivers nothing until resumed, and resume wakes waiters", func(t *testing.T) {
		e := s.env(t)
		require.NoError(t, e.q.Pause(e.ctx))
		e.enqueue("a")
		e.expectEmpty()
		st, err := e.q.Stats(e.ctx)
		require.NoError(t, err)
		assert.True(t, st.Paused)
		got := make(chan []queue.Delivery, 1)
		go func() {
			ds, _ := e.q.Receive(e.ctx, queue.ReceiveOptions{Lease: e.lease, Wait: queue.MaxWait})
			got <- ds
		}()
		if e.clk != nil {
			require.NoError(t, e.clk.BlockUntilTimers(e.ctx, 1))
		}
		require.NoError(t, e.q.Resume(e.ctx))
		select {
		case ds := <-got:
			require.Len(t, ds, 1)
		case <-e.ctx.Done():
			t.Fatal("resume did not wake the waiting receive")
		}
	})
	t.Run("stats count depth, in flight, delayed, dead and outcomes", func(t *testing.T) {
		e := s.env(t)
		e.enqueue("a", "b", "c", "d")
		_, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte("later"), Delay: 100 * e.lease})
		require.NoError(t, err)
		if e.clk != nil {
			e.pass(time.Second)
		}
		ds := e.receive(3, e.slack())
		for len(ds) < 3 {
			ds = append(ds, e.receive(3-len(ds), e.slack())...)
		}
		require.NoError(t, e.q.Ack(e.ctx, ds[0].Receipt))
		require.NoError(t, e.q.DeadLetter(e.ctx, ds[1].Receipt, "bad"))
		require.NoError(t, e.q.Nack(e.ctx, ds[2].Receipt, 0, "again"))
		st, err := e.q.Stats(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 2, st.Depth, "c (nacked) and d wait")
		assert.Equal(t, 0, st.InFlight)
		assert.Equal(t, 1, st.Delayed)
		assert.Equal(t, 1, st.Dead)
		assert.Equal(t, uint64(1), st.Processed)
		assert.Equal(t, uint64(2), st.Failed)
		if e.clk != nil {
			assert.Equal(t, time.Second, st.OldestAge)
		} else {
			assert.Positive(t, st.OldestAge)
		}
		d := e.receiveOne()
		st, err = e.q.Stats(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, st.InFlight)
		assert.Equal(t, uint64(1), st.Retried, "c delivered a second time")
		require.NoError(t, e.q.Ack(e.ctx, d.Receipt))
	})
}

func (s *suite) testConcurrency(t *testing.T) {
	t.Run("concurrent producers and consumers process every message exactly once", func(t *testing.T) {
		e := s.env(t)
		const producers, perProducer, consumers = 4, 200, 4
		total := producers * perProducer
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				for i := 0; i < perProducer; i += 10 {
					msgs := make([]queue.Message, 10)
					for j := range msgs {
						msgs[j] = queue.Message{Body: []byte(fmt.Sprintf("%d-%d", p, i+j))}
					}
					if _, err := e.q.EnqueueBatch(e.ctx, msgs); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		var mu sync.Mutex
		seen := make(map[string]int)
		done := make(chan struct{})
		for range consumers {
			wg.Go(func() {
				for ctx.Err() == nil {
					ds, err := e.q.Receive(ctx, queue.ReceiveOptions{Max: 8, Lease: time.Hour, Wait: queue.MaxWait})
					if err != nil {
						return
					}
					for _, d := range ds {
						if err := e.q.Ack(e.ctx, d.Receipt); err != nil {
							t.Errorf("ack: %v", err)
						}
						mu.Lock()
						seen[string(d.Body)]++
						if len(seen) == total {
							close(done)
						}
						mu.Unlock()
					}
				}
			})
		}
		select {
		case <-done:
		case <-e.ctx.Done():
		}
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, seen, total)
		for body, n := range seen {
			require.Equal(t, 1, n, "message %s processed %d times", body, n)
		}
	})
}

// observed wraps a backend to report settlements, so tests wait for events
// instead of polling.
type observed struct {
	queue.Backend
	dead chan string
}

func (o *observed) DeadLetter(ctx context.Context, q string, r queue.Receipt, lastErr string) error {
	err := o.Backend.DeadLetter(ctx, q, r, lastErr)
	if err == nil {
		o.dead <- lastErr
	}
	return err
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (s *suite) worker(e *env, b queue.Backend, h queue.Handler, opts queue.WorkerOptions) (*queue.Worker, func()) {
	e.t.Helper()
	q, err := queue.New(b, e.q.Name())
	require.NoError(e.t, err)
	if e.clk != nil {
		opts.Clock = e.clk
	}
	opts.Logger = quiet()
	w := queue.NewWorker(q, h, opts)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	return w, func() {
		e.t.Helper()
		require.NoError(e.t, w.Shutdown(e.ctx))
		require.NoError(e.t, <-ran)
	}
}

func (s *suite) testCrash(t *testing.T) {
	t.Run("a consumer that disappears without acking: every message is redelivered and processed", func(t *testing.T) {
		e := s.env(t)
		const n = 100
		msgs := make([]queue.Message, n)
		for i := range msgs {
			msgs[i] = queue.Message{Body: []byte(strconv.Itoa(i))}
		}
		_, err := e.q.EnqueueBatch(e.ctx, msgs)
		require.NoError(t, err)
		// The crashing consumer takes everything and is never heard of
		// again: no ack, no nack, no extension.
		taken := 0
		for taken < n {
			ds := e.receive(30, e.slack())
			require.NotEmpty(t, ds)
			taken += len(ds)
		}
		e.expectEmpty()

		processed := make(chan queue.Delivery, n)
		_, stop := s.worker(e, e.b, func(_ context.Context, d queue.Delivery) error {
			processed <- d
			return nil
		}, queue.WorkerOptions{Concurrency: 8, Lease: e.lease, Wait: queue.MaxWait})
		e.pass(e.lease)
		seen := make(map[string]bool)
		for len(seen) < n {
			select {
			case d := <-processed:
				assert.Equal(t, 2, d.Attempt)
				seen[string(d.Body)] = true
			case <-e.ctx.Done():
				t.Fatalf("only %d of %d messages were redelivered", len(seen), n)
			}
		}
		stop()
		st, err := e.q.Stats(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 0, st.Depth+st.InFlight+st.Delayed, "nothing left")
		assert.Equal(t, uint64(n), st.Processed)
	})
}

func (s *suite) testWorker(t *testing.T) {
	t.Run("retries up to max attempts, then dead-letters with the last error", func(t *testing.T) {
		e := s.env(t)
		ob := &observed{Backend: e.b, dead: make(chan string, 1)}
		attempts := make(chan int, 10)
		_, stop := s.worker(e, ob, func(_ context.Context, d queue.Delivery) error {
			attempts <- d.Attempt
			return queue.RetryAfter(0, fmt.Errorf("boom %d", d.Attempt))
		}, queue.WorkerOptions{Concurrency: 2, Lease: e.lease, MaxAttempts: 3, Wait: queue.MaxWait})
		e.enqueue("doomed")
		var lastErr string
		select {
		case lastErr = <-ob.dead:
		case <-e.ctx.Done():
			t.Fatal("the message was not dead-lettered")
		}
		stop()
		close(attempts)
		var got []int
		for a := range attempts {
			got = append(got, a)
		}
		assert.Equal(t, []int{1, 2, 3}, got)
		assert.Contains(t, lastErr, "boom 3")
		dead, _, err := e.q.Dead(e.ctx, "", 10)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		assert.Equal(t, 3, dead[0].Attempts)
	})
	t.Run("a permanent error dead-letters at once", func(t *testing.T) {
		e := s.env(t)
		ob := &observed{Backend: e.b, dead: make(chan string, 1)}
		_, stop := s.worker(e, ob, func(context.Context, queue.Delivery) error {
			return queue.Permanent(errors.New("malformed"))
		}, queue.WorkerOptions{Lease: e.lease, Wait: queue.MaxWait})
		e.enqueue("bad")
		select {
		case lastErr := <-ob.dead:
			assert.Contains(t, lastErr, "malformed")
		case <-e.ctx.Done():
			t.Fatal("the message was not dead-lettered")
		}
		stop()
	})
}

func (s *suite) testClose(t *testing.T) {
	t.Run("close ends a waiting receive, later calls fail with ErrClosed", func(t *testing.T) {
		e := s.env(t)
		got := make(chan error, 1)
		go func() {
			_, err := e.q.Receive(e.ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
			got <- err
		}()
		if e.clk != nil {
			require.NoError(t, e.clk.BlockUntilTimers(e.ctx, 1))
		}
		require.NoError(t, e.b.Close())
		select {
		case err := <-got:
			require.ErrorIs(t, err, queue.ErrClosed)
		case <-e.ctx.Done():
			t.Fatal("close did not end the waiting receive")
		}
		_, err := e.q.Enqueue(e.ctx, queue.Message{Body: []byte("x")})
		assert.ErrorIs(t, err, queue.ErrClosed)
	})
}

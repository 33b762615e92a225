package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/clock"
)

// Handler processes one delivery. Returning nil acks the message. Returning
// an error fails this attempt: the message is retried after a backoff, or
// after the delay of a RetryAfter error, until its attempts reach
// MaxAttempts; then, or at once for a Permanent error, it goes to the
// dead-letter queue. ctx ends when the per-message Timeout passes, when the
// lease is lost, and when the worker stops.
type Handler func(ctx context.Context, d Delivery) error

// Middleware wraps a Handler: logging, metrics, tracing, decoding.
type Middleware func(Handler) Handler

// Errors about handlers and workers.
var (
	// ErrHandlerTimeout is the cause of a handler's context ending because
	// the per-message Timeout passed; the attempt counts as failed.
	ErrHandlerTimeout = errors.New("queue: handler timed out")
	// ErrLeaseLost is the cause of a handler's context ending because its
	// lease could not be extended: the message may be with another
	// consumer already.
	ErrLeaseLost = errors.New("queue: lease lost")
	// ErrWorkerStopped is the cause of a handler's context ending because
	// the worker stopped before the handler finished; its message was
	// given back (nacked with no delay), not counted as a failure.
	ErrWorkerStopped = errors.New("queue: worker stopped")
	// ErrWorkerStarted: Run was called on a worker that had already run.
	ErrWorkerStarted = errors.New("queue: worker already started")
)

// PermanentError marks a handler error that retrying cannot fix: the
// message goes to the dead-letter queue at once. Make one with Permanent.
type PermanentError struct{ Err error }

// Permanent wraps err so that the worker dead-letters the message without
// retrying it.
func Permanent(err error) error { return &PermanentError{Err: err} }

func (e *PermanentError) Error() string { return "permanent: " + errText(e.Err) }
func (e *PermanentError) Unwrap() error { return e.Err }

// RetryAfterError asks for the next attempt after Delay instead of the
// backoff's delay. The attempt still counts toward MaxAttempts. Make one
// with RetryAfter.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

// RetryAfter wraps err so that the worker retries the message after d
// (clamped to [0, MaxDelay]).
func RetryAfter(d time.Duration, err error) error { return &RetryAfterError{Delay: d, Err: err} }

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("retry after %v: %s", e.Delay, errText(e.Err))
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// PanicError is the failure of a handler that panicked.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// Defaults and bounds of WorkerOptions.
const (
	DefaultConcurrency = 10
	MaxConcurrency     = MaxBatch
	DefaultWait        = 20 * time.Second
	DefaultMaxAttempts = 5
	DefaultRetryBase   = time.Second
	DefaultRetryMax    = 5 * time.Minute
	DefaultTimeout     = 5 * time.Minute
	// DefaultPrefetchPerHandler bounds the default (adaptive) Prefetch on
	// an engine that is not a PrefetchAdvisor.
	DefaultPrefetchPerHandler = 10
)

// WorkerOptions configures NewWorker. The zero value gives every default.
type WorkerOptions struct {
	// Concurrency bounds how many handlers run at once, in [1,
	// MaxConcurrency]. The worker receives as many messages as it has free
	// handlers plus room under Prefetch, in one long-polling receive; on
	// the memory backend, while the last receive found more messages than
	// that, a handler that finishes receives its next message itself
	// (without waiting). Zero means DefaultConcurrency (10).
	Concurrency int
	// Prefetch is how many received messages may wait for a free handler,
	// in [0, MaxBatch], so that the next messages are on their way while
	// the handlers work, in fewer and fuller receives. Their leases are
	// kept as a running handler's are; when the worker stops receiving,
	// those not started are given back at once. A message waiting here is
	// leased: no other worker can take it.
	//
	// Zero means, on an engine (where each receive is a round trip), a
	// limit that follows the handlers: it doubles, up to the backend's
	// PrefetchPerHandler per handler (DefaultPrefetchPerHandler for a
	// backend that is not a PrefetchAdvisor), when they run through the waiting
	// messages before the next receive is back, and halves, down to none,
	// when they finish less than an eighth of them meanwhile; so fast
	// handlers get full round trips and slow ones leave the queue's other
	// messages to other workers. On the memory backend zero means none: a finishing
	// handler receives its next message itself. -1 means none.
	Prefetch int
	// Lease is the lease taken on each message, in [MinLease, MaxLease].
	// While a handler runs, the worker extends it every Lease/3. Zero
	// means DefaultLease (30s).
	Lease time.Duration
	// Wait is how long each receive waits for a message (long polling),
	// in (0, MaxWait]. Zero means DefaultWait (20s).
	Wait time.Duration
	// MaxAttempts bounds the deliveries of a message: a message whose
	// attempt number MaxAttempts fails goes to the dead-letter queue.
	// Zero means DefaultMaxAttempts (5).
	MaxAttempts int
	// RetryBase and RetryMax shape the delay before a retry: a random
	// duration in [0, min(RetryMax, RetryBase*2^(attempt-1))] (exponential
	// backoff with full jitter). Zero means DefaultRetryBase (1s) and
	// DefaultRetryMax (5m); RetryMax is at most MaxDelay.
	RetryBase, RetryMax time.Duration
	// Timeout bounds one handler call: its context ends with cause
	// ErrHandlerTimeout and the attempt fails. Zero means DefaultTimeout
	// (5m); negative means no timeout.
	Timeout time.Duration
	// Middleware wraps the handler, the first element outermost.
	Middleware []Middleware
	// Clock drives lease extension, timeouts and receive retries. Nil
	// means the real clock.
	Clock clock.Clock
	// Logger receives panics (with their stack), lost leases and backend
	// errors. Nil means slog.Default().
	Logger *slog.Logger

	rand func() float64 // backoff jitter; tests set it
}

// WorkerStats counts what a worker did since it started.
type WorkerStats struct {
	Succeeded    uint64 // handler returned nil and the ack held
	Failed       uint64 // attempts that failed: errors, panics, timeouts
	Retried      uint64 // failed attempts nacked for a retry
	DeadLettered uint64 // messages sent to the dead-letter queue
	Panics       uint64 // handler panics (also counted in Failed)
	TimedOut     uint64 // handler timeouts (also counted in Failed)
	LeaseLost    uint64 // acks or extensions refused with ErrStaleReceipt
	Abandoned    uint64 // messages given back unfinished at shutdown
}

// Worker runs a handler over a queue with a pool of goroutines: it leases
// messages, extends their leases while the handler runs, acks what
// succeeds, retries what fails with backoff, dead-letters what keeps
// failing, and on Shutdown gives back what it could not finish.
//
// Run starts it and Shutdown stops it gracefully; a Worker runs once. Its
// methods are safe for concurrent use.
type Worker struct {
	q      *Queue
	h      Handler
	opts   WorkerOptions
	clock  clock.Clock
	policy backoff.Policy
	log    *slog.Logger
	slots  []*slot

	mu       sync.Mutex
	started  bool                    // guarded by mu
	stopping bool                    // Shutdown was called; guarded by mu
	stopRecv context.CancelFunc      // guarded by mu
	hardStop context.CancelCauseFunc // guarded by mu
	done     chan struct{}           // closed when Run returns

	// Handler timeouts share one timer, armed while handlers run for the
	// earliest of their deadlines (see armTimeouts).
	tmu      sync.Mutex
	tarmed   atomic.Bool // the timer is armed; set under tmu
	timeouts clock.Timer // guarded by tmu
	tstopped bool        // Run has ended: arm no more; guarded by tmu

	// backlog reports that the last receive filled every free handler, so
	// that more messages are likely waiting: a handler that finishes then
	// takes its next message itself (see Run).
	backlog atomic.Bool
	// batchAcks is set when the backend is an engine that acks a batch in
	// one round trip (a BatchAcker): handlers then hand their acks to the
	// acker. On the memory backend an ack is a function call, and on a
	// backend without AckBatch the acker could only send them one by one.
	batchAcks bool

	// Acks of finished messages wait in acks for the acker goroutine,
	// which sends them as one AckBatch, so that a handler does not wait
	// for its ack and a busy worker pays one call for many (see ackLater).
	amu    sync.Mutex
	acks   []pendingAck  // guarded by amu
	ackNow chan struct{} // a nudge to the acker; buffered 1

	// waiting holds the prefetched messages not yet started.
	waiting waitingSet
	// freed gets a value (buffered 1) when a handler finishes a message,
	// for the receive loop waiting for room.
	freed chan struct{}

	succeeded, failed, retried, deadLettered, panics, timedOut, leaseLost, abandoned atomic.Uint64
}

// slot is one handler goroutine's current message.
type slot struct {
	mu         sync.Mutex
	active     bool         // guarded by mu
	abandoned  bool         // given back at shutdown; guarded by mu
	lost       bool         // its lease could not be extended: extend no more; guarded by mu
	d          Delivery     // guarded by mu
	leaseUntil time.Time    // guarded by mu
	deadline   time.Time    // when the call times out; zero when it cannot; guarded by mu
	call       *callContext // the running call's context; guarded by mu
}

// NewWorker returns a worker that will run h over q. Options out of bounds
// are clamped to them.
func NewWorker(q *Queue, h Handler, opts WorkerOptions) *Worker {
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	opts.Concurrency = min(opts.Concurrency, MaxConcurrency)
	opts.Prefetch = min(opts.Prefetch, MaxBatch)
	if opts.Lease == 0 {
		opts.Lease = DefaultLease
	}
	opts.Lease = min(max(opts.Lease, MinLease), MaxLease)
	if opts.Wait <= 0 {
		opts.Wait = DefaultWait
	}
	opts.Wait = min(opts.Wait, MaxWait)
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = DefaultRetryBase
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	opts.RetryMax = min(opts.RetryMax, MaxDelay)
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	for i := len(opts.Middleware) - 1; i >= 0; i-- {
		h = opts.Middleware[i](h)
	}
	w := &Worker{
		q: q, h: h, opts: opts, clock: clock.Or(opts.Clock), log: log,
		policy: backoff.Policy{Base: opts.RetryBase, Max: opts.RetryMax, Rand: opts.rand},
		slots:  make([]*slot, opts.Concurrency),
		done:   make(chan struct{}),
		ackNow: make(chan struct{}, 1),
		freed:  make(chan struct{}, 1),
	}
	for i := range w.slots {
		w.slots[i] = &slot{}
	}
	return w
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		Succeeded: w.succeeded.Load(), Failed: w.failed.Load(), Retried: w.retried.Load(),
		DeadLettered: w.deadLettered.Load(), Panics: w.panics.Load(), TimedOut: w.timedOut.Load(),
		LeaseLost: w.leaseLost.Load(), Abandoned: w.abandoned.Load(),
	}
}

// Run receives and handles messages until Shutdown is called or ctx ends,
// and returns when every goroutine it started has finished. After
// Shutdown it returns nil. When ctx ends it stops at once, as Shutdown
// with an ended context does: unfinished messages are given back (nacked
// with no delay) and their handlers' contexts end with cause
// ErrWorkerStopped; it then waits for those handlers to return and
// returns ctx.Err(). It returns ErrClosed when the backend is closed, and
// ErrWorkerStarted when called a second time.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return ErrWorkerStarted
	}
	w.started = true
	defer close(w.done)
	if w.stopping {
		w.mu.Unlock()
		return nil
	}
	hard, hardStop := context.WithCancelCause(ctx)
	defer hardStop(nil)
	recvCtx, stopRecv := context.WithCancel(hard)
	defer stopRecv()
	w.stopRecv, w.hardStop = stopRecv, hardStop
	w.mu.Unlock()

	// The handlers' own receive (below) pays only where a receive is a
	// function call: on the memory backend. On an engine each would be one
	// round trip per message; there the receive loop batches instead, and
	// prefetches so that a round trip is under way while handlers work.
	_, inProcess := w.q.Backend().(*Memory)
	_, batcher := w.q.Backend().(BatchAcker)
	w.batchAcks = batcher && !inProcess
	var prefetch prefetchLimit
	switch {
	case w.opts.Prefetch > 0:
		prefetch = prefetchLimit{n: w.opts.Prefetch, max: w.opts.Prefetch}
	case w.opts.Prefetch == 0 && !inProcess:
		per := DefaultPrefetchPerHandler
		if pa, ok := w.q.Backend().(PrefetchAdvisor); ok {
			per = max(pa.PrefetchPerHandler(), 0)
		}
		limit := min(per*w.opts.Concurrency, MaxBatch)
		prefetch = prefetchLimit{n: min(w.opts.Concurrency, limit), max: limit, adaptive: true}
	}
	w.waiting.m = make(map[Receipt]*waitingMsg)
	// With prefetch, messages already wait in line: a handler that
	// received its own would pass them by.
	selfReceive := inProcess && prefetch.max == 0
	n := w.opts.Concurrency + prefetch.max
	jobs := make(chan job, n)
	tokens := make(chan struct{}, n)  // one per message received and not yet finished
	bg := context.WithoutCancel(hard) // settles messages whatever happens to hard
	// release frees the token of a finished message and nudges the receive
	// loop, which may be waiting for room.
	release := func() {
		<-tokens
		select {
		case w.freed <- struct{}{}:
		default:
		}
	}

	var handlers sync.WaitGroup
	for _, s := range w.slots {
		handlers.Go(func() {
			// Each handler's contexts descend from one of its own, so that
			// handlers do not contend on hard to make and end them.
			parent, cancel := context.WithCancelCause(hard)
			defer cancel(nil)
			var own []Delivery // what the handler receives itself, reused
			for j := range jobs {
				if prefetch.max > 0 {
					until, lost := w.waiting.take(j.d.Receipt)
					if lost {
						release()
						continue
					}
					if !until.IsZero() {
						j.leasedAt = until.Add(-w.opts.Lease)
					}
				}
				if recvCtx.Err() != nil {
					// Receiving stopped: a message not started goes back
					// at once, for another worker.
					w.giveBack(bg, j.d)
					release()
					continue
				}
				w.handle(parent, bg, s, j.d, j.leasedAt)
				// While messages are waiting, take the next one here
				// rather than through the receive loop: one receive of one
				// message, for this handler only, so that prefetch still
				// equals free capacity, without two goroutine switches
				// per message. Receiving stops with recvCtx, as the loop's.
				for selfReceive && w.backlog.Load() && recvCtx.Err() == nil {
					var err error
					own, err = w.q.ReceiveAppend(recvCtx, own[:0], ReceiveOptions{Max: 1, Lease: w.opts.Lease})
					if err != nil || len(own) == 0 {
						w.backlog.Store(false) // the loop reports errors and retries
						break
					}
					d := own[0]
					own[0] = Delivery{} // let go of the message
					w.handle(parent, bg, s, d, time.Time{})
				}
				release()
			}
		})
	}
	// The ticker is made here, before any message is received, so that
	// every handler runs with lease keeping already on the clock.
	ticker := w.clock.NewTicker(max(w.opts.Lease/3, time.Millisecond/3))
	keeperDone := make(chan struct{})
	var keeper sync.WaitGroup
	keeper.Go(func() { w.keepLeases(ticker, keeperDone) })
	ackerDone := make(chan struct{})
	var acker sync.WaitGroup
	acker.Go(func() { w.sendAcks(bg, ackerDone) })

	err := w.receive(recvCtx, jobs, tokens, &prefetch)
	// Receiving stopped: the messages not started go back at once, for
	// another worker, rather than when a handler is next free.
	for drained := false; !drained; {
		select {
		case j := <-jobs:
			if prefetch.max > 0 {
				w.waiting.take(j.d.Receipt)
			}
			w.giveBack(bg, j.d)
		default:
			drained = true
		}
	}
	close(jobs)
	if ctx.Err() != nil {
		w.abandonAll()
	}
	handlers.Wait()
	close(ackerDone) // the acker sends what is left, then returns
	acker.Wait()
	close(keeperDone)
	keeper.Wait()
	w.tmu.Lock()
	w.tstopped = true
	if w.timeouts != nil {
		w.timeouts.Stop()
	}
	w.tmu.Unlock()
	if err == nil && ctx.Err() != nil {
		w.mu.Lock()
		graceful := w.stopping
		w.mu.Unlock()
		if !graceful {
			err = ctx.Err()
		}
	}
	return err
}

// receive leases as many messages as there are free handlers and hands
// them over, until ctx ends.
func (w *Worker) receive(ctx context.Context, jobs chan<- job, tokens chan struct{}, p *prefetchLimit) error {
	retrier := backoff.NewRetrier(backoff.Policy{Base: 100 * time.Millisecond, Max: 10 * time.Second}, w.clock)
	c := w.opts.Concurrency
	for {
		// Wait for room: free handlers, or room under the prefetch limit.
		// While messages still wait for a handler, wait for half the room:
		// fewer, fuller round trips. tokens only shrinks meanwhile (this
		// loop alone adds to it), so the room found is there.
		var n int
		for {
			room := c + p.n - len(tokens)
			if room > 0 && (p.n == 0 || 2*room >= c+p.n || len(jobs) == 0) {
				n = min(room, MaxBatch)
				break
			}
			select {
			case <-w.freed:
			case <-ctx.Done():
				return nil
			}
		}
		for range n {
			tokens <- struct{}{} // never blocks: cap(tokens) is c + p.max
		}
		at := w.clock.Now()
		before := len(tokens)
		ds, err := w.q.Receive(ctx, ReceiveOptions{Max: n, Lease: w.opts.Lease, Wait: w.opts.Wait})
		if err == nil && len(ds) > 0 {
			// What the handlers did while the receive was on its way
			// tells whether the buffer suits them. (A receive that waited
			// for messages makes the handlers look fast, but then the
			// queue is sparse, and a larger limit holds no more.)
			p.observe(before-n, before-len(tokens), len(jobs), c)
		}
		w.backlog.Store(len(ds) == n)
		for range n - len(ds) {
			<-tokens
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrClosed) {
				return err
			}
			w.log.Error("queue: receive failed", "queue", w.q.Name(), "err", err)
			if retrier.Next(ctx) != nil {
				return nil
			}
			continue
		}
		retrier.Reset()
		if p.max > 0 {
			// All of them before any handler can start one: the keeper
			// then finds every message waiting or running.
			w.waiting.add(ds, at.Add(w.opts.Lease))
		}
		for _, d := range ds {
			jobs <- job{d, at} // never blocks: tokens bound the messages to cap(jobs)
		}
	}
}

// PrefetchAdvisor is implemented by an engine backend that knows how far
// prefetching pays on it: a receive of many messages costs about one round
// trip on some engines, and about one row each on others.
type PrefetchAdvisor interface {
	// PrefetchPerHandler is the most received messages per handler that a
	// Worker with the default Prefetch keeps waiting.
	PrefetchPerHandler() int
}

// prefetchLimit is how many received messages may wait for a handler.
// Set by WorkerOptions.Prefetch it is fixed; by default, on an engine, it
// follows the handlers: the buffer should not run dry while the next
// receive is on its way, or the handlers wait for it, and should not hold
// what the handlers will not reach soon, or those messages sit leased
// where no other worker can take them. It starts at the concurrency.
type prefetchLimit struct {
	n, max   int
	adaptive bool
}

// observe adjusts an adaptive limit after a receive. While it was on its
// way, the handlers had had messages received before (running or
// waiting), finished finished messages, and left were still waiting at
// its end. The limit halves (down to none) when the handlers finished
// less than an eighth of what they had: slow handlers, which prefetch
// does not speed up. Otherwise it doubles (up to max) when the waiting
// messages ran out: the handlers would have done more.
func (p *prefetchLimit) observe(had, finished, left, concurrency int) {
	if !p.adaptive {
		return
	}
	switch {
	case 8*finished < had:
		p.n /= 2
	case left == 0:
		p.n = min(max(2*p.n, concurrency), p.max)
	}
}

// job is a received message on its way to a handler, with when its lease
// was taken or last extended.
type job struct {
	d        Delivery
	leasedAt time.Time
}

// handle runs the handler on d in slot s and settles the outcome. hard is
// the handler goroutine's context, ended (with Run's) when the worker
// stops; bg is for settling, never ended. leasedAt is when d's lease was
// taken or last extended; zero means now.
func (w *Worker) handle(hard, bg context.Context, s *slot, d Delivery, leasedAt time.Time) {
	if hard.Err() != nil { // stopping: give it back untouched
		w.giveBack(bg, d)
		return
	}
	ctx := newCallContext(hard)
	defer ctx.cancel(nil)
	now := w.clock.Now()
	if leasedAt.IsZero() {
		leasedAt = now
	}
	s.mu.Lock()
	s.active, s.abandoned, s.lost, s.d, s.call = true, false, false, d, ctx
	s.leaseUntil = leasedAt.Add(w.opts.Lease)
	if w.opts.Timeout > 0 {
		s.deadline = now.Add(w.opts.Timeout)
	}
	s.mu.Unlock()
	if w.opts.Timeout > 0 && !w.tarmed.Load() {
		w.armTimeouts()
	}

	err := w.call(ctx, d)

	s.mu.Lock()
	abandoned := s.abandoned
	s.active, s.call, s.d, s.deadline = false, nil, Delivery{}, time.Time{}
	s.mu.Unlock()
	if abandoned {
		return // already given back by abandonAll
	}
	cause := ctx.Cause()
	switch {
	case err == nil && w.batchAcks:
		w.ackLater(bg, d)
	case err == nil:
		w.ack(bg, d)
	case errors.Is(cause, ErrWorkerStopped) || (hard.Err() != nil && errors.Is(err, context.Canceled)):
		w.giveBack(bg, d)
	case errors.Is(cause, ErrLeaseLost):
		// The message may be with another consumer: nothing to settle.
		w.failed.Add(1)
	default:
		if errors.Is(cause, ErrHandlerTimeout) {
			w.timedOut.Add(1)
			err = fmt.Errorf("%w after %v: %w", ErrHandlerTimeout, w.opts.Timeout, err)
		}
		w.fail(bg, d, err)
	}
}

// armTimeouts arms the timeout timer, which is disarmed, for a handler that
// has just started: its deadline, Timeout from now, is the latest of all,
// and checkTimeouts re-arms the timer for the next deadline each time it
// fires. So the timer costs nothing per message while handlers run back
// to back.
func (w *Worker) armTimeouts() {
	w.tmu.Lock()
	defer w.tmu.Unlock()
	if w.tarmed.Load() || w.tstopped {
		return
	}
	w.tarmed.Store(true)
	if w.timeouts == nil {
		w.timeouts = w.clock.AfterFunc(w.opts.Timeout, w.checkTimeouts)
	} else {
		w.timeouts.Reset(w.opts.Timeout)
	}
}

// checkTimeouts runs when the timeout timer fires: it ends the context of
// every handler past its deadline with cause ErrHandlerTimeout, and arms
// the timer again for the earliest deadline still to come.
func (w *Worker) checkTimeouts() {
	w.tmu.Lock()
	defer w.tmu.Unlock()
	if w.tstopped {
		return
	}
	// Disarmed before the slots are read: a handler that starts while they
	// are read, and is missed, finds the timer disarmed and arms it.
	w.tarmed.Store(false)
	now := w.clock.Now()
	var next time.Time
	for _, s := range w.slots {
		var call *callContext
		s.mu.Lock()
		switch {
		case !s.active || s.deadline.IsZero():
		case !now.Before(s.deadline):
			call, s.deadline = s.call, time.Time{}
		case next.IsZero() || s.deadline.Before(next):
			next = s.deadline
		}
		s.mu.Unlock()
		if call != nil {
			call.cancel(ErrHandlerTimeout)
		}
	}
	if !next.IsZero() {
		w.tarmed.Store(true)
		w.timeouts.Reset(next.Sub(now))
	}
}

// call runs the handler, turning a panic into a *PanicError.
func (w *Worker) call(ctx context.Context, d Delivery) (err error) {
	defer func() {
		if v := recover(); v != nil {
			w.panics.Add(1)
			pe := &PanicError{Value: v, Stack: debug.Stack()}
			w.log.Error("queue: handler panicked", "queue", w.q.Name(), "id", d.ID, "panic", v, "stack", string(pe.Stack))
			err = pe
		}
	}()
	return w.h(ctx, d)
}

// pendingAck is a finished message waiting for its ack.
type pendingAck struct {
	receipt Receipt
	id      string
}

// maxPendingAcks bounds the acks waiting for the acker. At the bound, a
// handler acks its own message, and waits for it.
const maxPendingAcks = MaxBatch

// ackLater hands the ack of d to the acker; at the bound the handler acks
// d itself.
func (w *Worker) ackLater(ctx context.Context, d Delivery) {
	w.amu.Lock()
	if len(w.acks) >= maxPendingAcks {
		w.amu.Unlock()
		w.ack(ctx, d)
		return
	}
	w.acks = append(w.acks, pendingAck{d.Receipt, d.ID})
	first := len(w.acks) == 1
	w.amu.Unlock()
	if first {
		select {
		case w.ackNow <- struct{}{}:
		default:
		}
	}
}

// sendAcks sends the acks handed to it, as many as have gathered in one
// AckBatch, until done is closed; it then sends what is left and returns.
// Acks gather while the previous batch is on its way, so that the batch
// grows with the load and costs nothing in latency when idle.
func (w *Worker) sendAcks(ctx context.Context, done <-chan struct{}) {
	var batch []pendingAck
	receipts := make([]Receipt, 0, 64)
	for {
		stopping := false
		select {
		case <-w.ackNow:
		case <-done:
			stopping = true
		}
		for {
			w.amu.Lock()
			batch, w.acks = w.acks, batch[:0]
			w.amu.Unlock()
			if len(batch) == 0 {
				break
			}
			receipts = receipts[:0]
			for _, a := range batch {
				receipts = append(receipts, a.receipt)
			}
			err := w.q.AckBatch(ctx, receipts...)
			var be *BatchError
			switch {
			case err == nil:
				w.succeeded.Add(uint64(len(batch)))
			case errors.As(err, &be):
				for i, a := range batch {
					if be.Errs[i] == nil {
						w.succeeded.Add(1)
						continue
					}
					w.settleError(Delivery{ID: a.id}, "ack", be.Errs[i])
				}
			default:
				for _, a := range batch {
					w.settleError(Delivery{ID: a.id}, "ack", err)
				}
			}
			clear(batch) // let go of the receipts
		}
		if stopping {
			return
		}
	}
}

func (w *Worker) ack(ctx context.Context, d Delivery) {
	if err := w.q.Ack(ctx, d.Receipt); err != nil {
		w.settleError(d, "ack", err)
		return
	}
	w.succeeded.Add(1)
}

func (w *Worker) fail(ctx context.Context, d Delivery, err error) {
	w.failed.Add(1)
	var perm *PermanentError
	if errors.As(err, &perm) || d.Attempt >= w.opts.MaxAttempts {
		if derr := w.q.DeadLetter(ctx, d.Receipt, err.Error()); derr != nil {
			w.settleError(d, "dead-letter", derr)
			return
		}
		w.deadLettered.Add(1)
		return
	}
	delay := w.policy.Delay(d.Attempt - 1)
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		delay = min(max(ra.Delay, 0), MaxDelay)
	}
	if nerr := w.q.Nack(ctx, d.Receipt, delay, err.Error()); nerr != nil {
		w.settleError(d, "nack", nerr)
		return
	}
	w.retried.Add(1)
}

// giveBack nacks d with no delay so another consumer takes it at once.
func (w *Worker) giveBack(ctx context.Context, d Delivery) {
	if err := w.q.Nack(ctx, d.Receipt, 0, ErrWorkerStopped.Error()); err != nil {
		w.settleError(d, "nack", err)
		return
	}
	w.abandoned.Add(1)
}

func (w *Worker) settleError(d Delivery, op string, err error) {
	if errors.Is(err, ErrStaleReceipt) {
		w.leaseLost.Add(1)
		w.log.Warn("queue: lease lost before "+op+"; the message will be delivered again", "queue", w.q.Name(), "id", d.ID)
		return
	}
	w.log.Error("queue: "+op+" failed", "queue", w.q.Name(), "id", d.ID, "err", err)
}

// keepLeases extends, every Lease/3, the lease of every message whose
// handler is running and whose lease has two thirds or less left.
func (w *Worker) keepLeases(t clock.Ticker, done <-chan struct{}) {
	lease := w.opts.Lease
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C():
		}
		now := w.clock.Now()
		w.keepWaiting(now)
		for _, s := range w.slots {
			s.mu.Lock()
			due := s.active && !s.abandoned && !s.lost && s.leaseUntil.Sub(now) <= lease-lease/3
			d, call := s.d, s.call
			s.mu.Unlock()
			if !due {
				continue
			}
			err := w.q.Extend(context.Background(), d.Receipt, lease)
			switch {
			case err == nil:
				s.mu.Lock()
				if s.active && s.d.Receipt == d.Receipt {
					s.leaseUntil = now.Add(lease)
				}
				s.mu.Unlock()
			case errors.Is(err, ErrStaleReceipt):
				s.mu.Lock()
				if s.active && s.d.Receipt == d.Receipt {
					s.lost = true
				}
				s.mu.Unlock()
				w.leaseLost.Add(1)
				w.log.Warn("queue: lease lost while the handler ran", "queue", w.q.Name(), "id", d.ID)
				call.cancel(ErrLeaseLost)
			default:
				w.log.Error("queue: extending a lease failed", "queue", w.q.Name(), "id", d.ID, "err", err)
			}
		}
	}
}

// waitingSet holds the prefetched messages that wait for a handler, with
// when their leases end, so that the keeper extends them as it extends
// those of running handlers.
type waitingSet struct {
	mu sync.Mutex
	m  map[Receipt]*waitingMsg // guarded by mu
}

type waitingMsg struct {
	id         string
	leaseUntil time.Time
	lost       bool // its lease could not be extended: do not run it
}

func (ws *waitingSet) add(ds []Delivery, leaseUntil time.Time) {
	ws.mu.Lock()
	for _, d := range ds {
		ws.m[d.Receipt] = &waitingMsg{id: d.ID, leaseUntil: leaseUntil}
	}
	ws.mu.Unlock()
}

// take removes a message a handler is about to start, returning when its
// lease ends (moved by the extensions made while it waited) and whether
// it was lost meanwhile.
func (ws *waitingSet) take(r Receipt) (leaseUntil time.Time, lost bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	m, ok := ws.m[r]
	if !ok {
		return time.Time{}, false
	}
	delete(ws.m, r)
	return m.leaseUntil, m.lost
}

// keepWaiting extends the leases of the waiting messages with two thirds
// or less left, as keepLeases does for running handlers; a message whose
// lease is lost is marked so that no handler runs it.
func (w *Worker) keepWaiting(now time.Time) {
	lease := w.opts.Lease
	var due []Receipt
	w.waiting.mu.Lock()
	for r, m := range w.waiting.m {
		if !m.lost && m.leaseUntil.Sub(now) <= lease-lease/3 {
			due = append(due, r)
		}
	}
	w.waiting.mu.Unlock()
	for _, r := range due {
		err := w.q.Extend(context.Background(), r, lease)
		w.waiting.mu.Lock()
		m := w.waiting.m[r]
		w.waiting.mu.Unlock()
		if m == nil {
			continue // started meanwhile; its handler's lease keeping has it
		}
		switch {
		case err == nil:
			w.waiting.mu.Lock()
			m.leaseUntil = now.Add(lease)
			w.waiting.mu.Unlock()
		case errors.Is(err, ErrStaleReceipt):
			w.waiting.mu.Lock()
			m.lost = true
			w.waiting.mu.Unlock()
			w.leaseLost.Add(1)
			w.log.Warn("queue: lease lost while the message waited for a handler", "queue", w.q.Name(), "id", m.id)
		default:
			w.log.Error("queue: extending a lease failed", "queue", w.q.Name(), "id", m.id, "err", err)
		}
	}
}

// Shutdown stops the worker gracefully: it stops receiving, then waits for
// the running handlers to finish and settle their messages, until ctx
// ends. If ctx ends first, it gives back every unfinished message at once
// (a nack with no delay, so another worker takes it), ends those
// handlers' contexts with cause ErrWorkerStopped, and returns ctx.Err()
// without waiting for them; Run returns once they have. Shutdown before Run
// makes Run return at once.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.stopping = true
	started, stopRecv := w.started, w.stopRecv
	w.mu.Unlock()
	if !started {
		return nil
	}
	if stopRecv != nil {
		stopRecv()
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.abandonAll()
		return ctx.Err()
	}
}

// abandonAll gives back every message whose handler is still running and
// stops everything.
func (w *Worker) abandonAll() {
	w.mu.Lock()
	hardStop := w.hardStop
	w.mu.Unlock()
	if hardStop != nil {
		hardStop(ErrWorkerStopped)
	}
	bg := context.Background()
	for _, s := range w.slots {
		s.mu.Lock()
		give := s.active && !s.abandoned
		s.abandoned = true
		d, call := s.d, s.call
		s.mu.Unlock()
		if give {
			call.cancel(ErrWorkerStopped)
			w.giveBack(bg, d)
		}
	}
}

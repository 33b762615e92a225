package poll

import (
	"context"
	"sync"
)

// Runner decides where and when job work runs: the seam between Jobs and
// the goroutines (or, later, the queue workers) that do the work.
//
// Jobs calls Start once per submitted job with a run function that does
// everything: it marks the job Running, calls the Work, and records the
// outcome and notifies waiters. Start must not wait for run; it calls run
// now or later, exactly once, with a context that ends when the runner
// shuts down (run then records the job as Failed with ErrShutdown, without
// calling the Work if it had not begun).
type Runner interface {
	// Start schedules run. It fails with ErrTooManyJobs when the runner
	// cannot take more, ErrClosed after Shutdown.
	Start(id string, run func(ctx context.Context)) error
	// Shutdown refuses new work, ends the context of running and pending
	// runs, and waits for them to return or for ctx to end.
	Shutdown(ctx context.Context) error
}

// LocalRunner runs work on this node's goroutines, at most a limit at a
// time, first come first served; the rest wait, as Pending jobs, in a
// bounded queue. It holds no idle goroutine: a goroutine that finishes a
// run takes the next pending one, or ends.
type LocalRunner struct {
	limit, maxPending int
	ctx               context.Context
	cancel            context.CancelFunc
	wg                sync.WaitGroup

	mu      sync.Mutex
	active  int                     // goroutines running; guarded by mu
	pending []func(context.Context) // FIFO; guarded by mu
	closed  bool                    // guarded by mu
}

var _ Runner = (*LocalRunner)(nil)

// NewLocalRunner returns a runner that runs at most limit jobs at once
// (DefaultLimit when limit <= 0) and keeps at most maxPending waiting
// (DefaultMaxPending when maxPending <= 0).
func NewLocalRunner(limit, maxPending int) *LocalRunner {
	if limit <= 0 {
		limit = DefaultLimit
	}
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &LocalRunner{limit: limit, maxPending: maxPending, ctx: ctx, cancel: cancel}
}

// Start runs run in a new goroutine when fewer than limit are running, or
// queues it.
func (r *LocalRunner) Start(_ string, run func(ctx context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return ErrClosed
	case r.active < r.limit:
		r.active++
		r.wg.Add(1)
		go r.loop(run)
	case len(r.pending) >= r.maxPending:
		return ErrTooManyJobs
	default:
		r.pending = append(r.pending, run)
	}
	return nil
}

func (r *LocalRunner) loop(run func(context.Context)) {
	defer r.wg.Done()
	for {
		run(r.ctx)
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.active--
			r.mu.Unlock()
			return
		}
		run = r.pending[0]
		r.pending[0] = nil
		r.pending = r.pending[1:]
		r.mu.Unlock()
	}
}

// Shutdown refuses new work and cancels the context of every run; pending
// runs are still called, with that ended context, so that they record
// their jobs as shut down. It waits for all of them or for ctx.
func (r *LocalRunner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

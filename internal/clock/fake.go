package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when told to. Timers and tickers fire
// during Advance or Set, in order of their deadlines. The zero value is not
// usable; call NewFake.
type Fake struct {
	mu      sync.Mutex
	now     time.Time     // guarded by mu
	waiters []*fakeTimer  // active timers and tickers; guarded by mu
	changed chan struct{} // closed and replaced whenever waiters changes; guarded by mu
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock forward by d, firing every timer that falls due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	t := f.now.Add(d)
	f.mu.Unlock()
	f.Set(t)
}

// Set moves the clock to t (never backwards), firing every timer due by then
// in deadline order.
func (f *Fake) Set(t time.Time) {
	for {
		f.mu.Lock()
		if t.Before(f.now) {
			f.mu.Unlock()
			return
		}
		sort.SliceStable(f.waiters, func(i, j int) bool { return f.waiters[i].when.Before(f.waiters[j].when) })
		if len(f.waiters) == 0 || f.waiters[0].when.After(t) {
			f.now = t
			f.mu.Unlock()
			return
		}
		w := f.waiters[0]
		if w.when.After(f.now) {
			f.now = w.when
		}
		if w.period > 0 {
			w.when = w.when.Add(w.period)
		} else {
			f.remove(w)
		}
		// Fire under the lock, so that a Stop or Reset that returns before
		// this point can never be followed by a stale value on C.
		w.fire(f.now)
		f.mu.Unlock()
	}
}

// Timers reports how many timers and tickers are armed.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// BlockUntilTimers waits until at least n timers or tickers are armed, or ctx
// ends. Tests use it to know that the code under test is waiting on the
// clock before they Advance it.
func (f *Fake) BlockUntilTimers(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		if len(f.waiters) >= n {
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// NewTimer returns a timer that fires when the fake clock reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clock: f, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc calls fn in its own goroutine when the fake clock reaches now+d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{clock: f, fn: fn}
	t.Reset(d)
	return t
}

// NewTicker returns a ticker that fires each time the fake clock passes
// another period d.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	t := &fakeTimer{clock: f, ch: make(chan time.Time, 1)}
	t.resetPeriod(d)
	return fakeTicker{t}
}

func (f *Fake) add(w *fakeTimer) {
	f.waiters = append(f.waiters, w)
	f.notify()
}

func (f *Fake) remove(w *fakeTimer) bool {
	for i, x := range f.waiters {
		if x == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			f.notify()
			return true
		}
	}
	return false
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

type fakeTimer struct {
	clock  *Fake
	ch     chan time.Time
	fn     func()
	when   time.Time     // guarded by clock.mu
	period time.Duration // guarded by clock.mu; > 0 for tickers
}

// fire delivers a tick or starts fn. It never blocks, so callers hold
// clock.mu while calling it.
func (t *fakeTimer) fire(now time.Time) {
	if t.fn != nil {
		go t.fn()
		return
	}
	select {
	case t.ch <- now:
	default: // like time.Ticker, drop a tick nobody took
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

// Stop disarms the timer. Like a Go 1.23+ timer, it also discards a value
// that fired but was not received, so no stale value arrives on C after Stop
// returns, and it reports true in that case too.
func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	removed := t.clock.remove(t)
	drained := t.drain()
	return removed || drained
}

// Reset re-arms the timer to fire at now+d (at once when d <= 0). Like Stop,
// it discards an unreceived value and reports whether the timer was active
// or had a value pending.
func (t *fakeTimer) Reset(d time.Duration) bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	removed := t.clock.remove(t)
	drained := t.drain()
	t.period = 0
	t.when = t.clock.now.Add(d)
	if d <= 0 {
		t.fire(t.clock.now)
	} else {
		t.clock.add(t)
	}
	return removed || drained
}

// drain discards a value waiting on ch and reports whether there was one.
// The caller holds clock.mu.
func (t *fakeTimer) drain() bool {
	if t.ch == nil {
		return false
	}
	select {
	case <-t.ch:
		return true
	default:
		return false
	}
}

func (t *fakeTimer) resetPeriod(d time.Duration) {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.clock.remove(t)
	t.drain()
	t.period = d
	t.when = t.clock.now.Add(d)
	t.clock.add(t)
}

type fakeTicker struct{ t *fakeTimer }

func (k fakeTicker) C() <-chan time.Time { return k.t.ch }
func (k fakeTicker) Stop()               { k.t.Stop() }
func (k fakeTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	k.t.resetPeriod(d)
}

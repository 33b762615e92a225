package clock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	_ clock.Clock = (*clock.Fake)(nil)
	_ clock.Clock = clock.Real{}
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// recv returns the value waiting on c, failing the test if there is none.
// Values are delivered synchronously during Advance, so a value that is due
// is already there: no waiting is needed.
func recv(t *testing.T, c <-chan time.Time) time.Time {
	t.Helper()
	select {
	case v := <-c:
		return v
	default:
		t.Fatal("no value on channel, want one")
		return time.Time{}
	}
}

func assertEmpty(t *testing.T, c <-chan time.Time) {
	t.Helper()
	select {
	case v := <-c:
		t.Fatalf("got value %v on channel, want none", v)
	default:
	}
}

// testCtx bounds a wait on another goroutine so that a broken test fails
// instead of hanging; it is a deadline, never a sleep.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFakeNowAdvanceAndSet(t *testing.T) {
	tests := []struct {
		name string
		move func(f *clock.Fake)
		want time.Time
	}{
		{"advance moves forward", func(f *clock.Fake) { f.Advance(time.Second) }, epoch.Add(time.Second)},
		{"advance by zero keeps the time", func(f *clock.Fake) { f.Advance(0) }, epoch},
		{"negative advance never moves backwards", func(f *clock.Fake) { f.Advance(-time.Second) }, epoch},
		{"set moves forward", func(f *clock.Fake) { f.Set(epoch.Add(time.Hour)) }, epoch.Add(time.Hour)},
		{"set never moves backwards", func(f *clock.Fake) { f.Set(epoch.Add(-time.Hour)) }, epoch},
		{"set to now keeps the time", func(f *clock.Fake) { f.Set(epoch) }, epoch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(epoch)
			tt.move(f)
			assert.Equal(t, tt.want, f.Now())
		})
	}
}

func TestFakeSetBackwardsFiresNothing(t *testing.T) {
	f := clock.NewFake(epoch)
	f.Advance(time.Minute)
	tm := f.NewTimer(time.Second)
	f.Set(epoch)
	assertEmpty(t, tm.C())
	assert.Equal(t, epoch.Add(time.Minute), f.Now())
	assert.Equal(t, 1, f.Timers())
}

func TestFakeTimersFireInDeadlineOrder(t *testing.T) {
	f := clock.NewFake(epoch)
	// Armed out of order. A timer receives the fake time at which it fired,
	// which equals its own deadline only if Advance visited the deadlines in
	// order (the clock never moves back to an earlier deadline).
	var timers []clock.Timer
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second} {
		timers = append(timers, f.NewTimer(d))
	}
	require.Equal(t, 3, f.Timers())

	f.Advance(5 * time.Second)

	assert.Equal(t, epoch.Add(3*time.Second), recv(t, timers[0].C()), "3s timer")
	assert.Equal(t, epoch.Add(time.Second), recv(t, timers[1].C()), "1s timer")
	assert.Equal(t, epoch.Add(2*time.Second), recv(t, timers[2].C()), "2s timer")
	assert.Equal(t, epoch.Add(5*time.Second), f.Now())
	assert.Zero(t, f.Timers())
}

func TestFakeAfterFuncSeesItsDeadline(t *testing.T) {
	f := clock.NewFake(epoch)
	// With nothing else armed, the clock stops at the deadline, so fn (in
	// its own goroutine) observes exactly that time.
	got := make(chan time.Time, 1)
	f.AfterFunc(time.Second, func() { got <- f.Now() })
	f.Advance(time.Second)
	select {
	case v := <-got:
		assert.Equal(t, epoch.Add(time.Second), v)
	case <-testCtx(t).Done():
		t.Fatal("fn did not run")
	}
}

func TestFakeTimerFiresOnlyWhenDue(t *testing.T) {
	f := clock.NewFake(epoch)
	tm := f.NewTimer(2 * time.Second)

	f.Advance(2*time.Second - 1)
	assertEmpty(t, tm.C())
	assert.Equal(t, 1, f.Timers())

	f.Advance(1)
	assert.Equal(t, epoch.Add(2*time.Second), recv(t, tm.C()))
	assert.Zero(t, f.Timers())

	f.Advance(time.Hour)
	assertEmpty(t, tm.C())
}

func TestFakeTimerNonPositiveDurationFiresAtOnce(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		f := clock.NewFake(epoch)
		tm := f.NewTimer(d)
		assert.Equal(t, epoch, recv(t, tm.C()), "NewTimer(%v)", d)
		assert.Zero(t, f.Timers(), "NewTimer(%v)", d)
	}
}

func TestFakeTimerStop(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(f *clock.Fake, tm clock.Timer)
		want    bool
	}{
		{"armed timer reports true", func(*clock.Fake, clock.Timer) {}, true},
		{"stopped timer reports false", func(_ *clock.Fake, tm clock.Timer) { tm.Stop() }, false},
		{"fired and received timer reports false", func(f *clock.Fake, tm clock.Timer) {
			f.Advance(time.Second)
			<-tm.C()
		}, false},
		// Go 1.23+ semantics: a value nobody received is discarded and the
		// timer counts as stopped.
		{"fired but unreceived timer reports true", func(f *clock.Fake, _ clock.Timer) { f.Advance(time.Second) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(epoch)
			tm := f.NewTimer(time.Second)
			tt.prepare(f, tm)

			assert.Equal(t, tt.want, tm.Stop())
			assert.Zero(t, f.Timers())
			f.Advance(time.Hour)
			assertEmpty(t, tm.C())
		})
	}
}

func TestFakeTimerReset(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(f *clock.Fake, tm clock.Timer)
		want    bool
	}{
		{"armed timer reports true", func(*clock.Fake, clock.Timer) {}, true},
		{"stopped timer reports false", func(_ *clock.Fake, tm clock.Timer) { tm.Stop() }, false},
		{"fired and received timer reports false", func(f *clock.Fake, tm clock.Timer) {
			f.Advance(time.Second)
			<-tm.C()
		}, false},
		{"fired but unreceived timer reports true and drops the stale value", func(f *clock.Fake, _ clock.Timer) {
			f.Advance(time.Second)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clock.NewFake(epoch)
			tm := f.NewTimer(time.Second)
			tt.prepare(f, tm)
			start := f.Now()

			assert.Equal(t, tt.want, tm.Reset(3*time.Second))
			assertEmpty(t, tm.C())
			assert.Equal(t, 1, f.Timers())

			f.Advance(3*time.Second - 1)
			assertEmpty(t, tm.C())
			f.Advance(1)
			assert.Equal(t, start.Add(3*time.Second), recv(t, tm.C()), "fires d after the Reset")
		})
	}
}

func TestFakeTimerResetToZeroFiresAtOnce(t *testing.T) {
	f := clock.NewFake(epoch)
	tm := f.NewTimer(time.Second)
	assert.True(t, tm.Reset(0))
	assert.Equal(t, epoch, recv(t, tm.C()))
	assert.Zero(t, f.Timers())
}

func TestFakeTickerFiresEachPeriod(t *testing.T) {
	f := clock.NewFake(epoch)
	tk := f.NewTicker(time.Second)
	defer tk.Stop()

	for i := 1; i <= 3; i++ {
		f.Advance(time.Second)
		assert.Equal(t, epoch.Add(time.Duration(i)*time.Second), recv(t, tk.C()), "tick %d", i)
	}
	f.Advance(time.Second - 1)
	assertEmpty(t, tk.C())
	assert.Equal(t, 1, f.Timers())
}

func TestFakeTickerDropsTicksNobodyTook(t *testing.T) {
	f := clock.NewFake(epoch)
	tk := f.NewTicker(time.Second)
	defer tk.Stop()

	f.Advance(5 * time.Second)
	assert.Equal(t, epoch.Add(time.Second), recv(t, tk.C()), "the first tick is kept")
	assertEmpty(t, tk.C())

	f.Advance(time.Second)
	assert.Equal(t, epoch.Add(6*time.Second), recv(t, tk.C()), "the schedule is kept")
}

func TestFakeTickerStop(t *testing.T) {
	f := clock.NewFake(epoch)
	tk := f.NewTicker(time.Second)
	f.Advance(time.Second)
	tk.Stop()

	assert.Zero(t, f.Timers())
	assertEmpty(t, tk.C())
	f.Advance(time.Hour)
	assertEmpty(t, tk.C())
}

func TestFakeTickerReset(t *testing.T) {
	f := clock.NewFake(epoch)
	tk := f.NewTicker(time.Second)
	defer tk.Stop()
	f.Advance(time.Second) // a tick nobody takes: Reset drops it

	tk.Reset(5 * time.Second)
	assertEmpty(t, tk.C())
	f.Advance(4 * time.Second)
	assertEmpty(t, tk.C())
	f.Advance(time.Second)
	assert.Equal(t, epoch.Add(6*time.Second), recv(t, tk.C()))

	tk.Stop()
	tk.Reset(time.Second) // a stopped ticker can be restarted
	f.Advance(time.Second)
	assert.Equal(t, epoch.Add(7*time.Second), recv(t, tk.C()))
}

func TestFakeTickerRejectsNonPositivePeriod(t *testing.T) {
	f := clock.NewFake(epoch)
	assert.Panics(t, func() { f.NewTicker(0) })
	assert.Panics(t, func() { f.NewTicker(-time.Second) })
	tk := f.NewTicker(time.Second)
	defer tk.Stop()
	assert.Panics(t, func() { tk.Reset(0) })
}

func TestFakeAfterFuncRunsFn(t *testing.T) {
	f := clock.NewFake(epoch)
	ran := make(chan time.Time, 1)
	tm := f.AfterFunc(time.Second, func() { ran <- f.Now() })
	assert.Nil(t, tm.C(), "AfterFunc timers have no channel")

	f.Advance(time.Second - 1)
	select {
	case <-ran:
		t.Fatal("fn ran before its deadline")
	default:
	}

	f.Advance(time.Hour)
	select {
	case <-ran:
	case <-testCtx(t).Done():
		t.Fatal("fn did not run")
	}
	assert.False(t, tm.Stop(), "Stop after fn started")
}

func TestFakeAfterFuncStopPreventsFn(t *testing.T) {
	f := clock.NewFake(epoch)
	var calls atomic.Int32
	tm := f.AfterFunc(time.Second, func() { calls.Add(1) })

	assert.True(t, tm.Stop())
	assert.Zero(t, f.Timers())
	f.Advance(time.Hour)
	assert.Zero(t, calls.Load())
}

func TestFakeBlockUntilTimers(t *testing.T) {
	t.Run("returns once n timers are armed", func(t *testing.T) {
		f := clock.NewFake(epoch)
		start := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			<-start
			a := f.NewTimer(time.Second)
			b := f.NewTimer(time.Second)
			<-a.C()
			<-b.C()
		}()
		close(start)

		require.NoError(t, f.BlockUntilTimers(testCtx(t), 2))
		assert.Equal(t, 2, f.Timers())
		f.Advance(time.Second)
		<-done
	})
	t.Run("returns at once when enough are armed", func(t *testing.T) {
		f := clock.NewFake(epoch)
		f.NewTimer(time.Second)
		assert.NoError(t, f.BlockUntilTimers(context.Background(), 1))
		assert.NoError(t, f.BlockUntilTimers(context.Background(), 0))
	})
	t.Run("respects context cancellation", func(t *testing.T) {
		f := clock.NewFake(epoch)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- f.BlockUntilTimers(ctx, 1) }()
		cancel()
		assert.ErrorIs(t, <-errc, context.Canceled)
	})
	t.Run("a stopped timer does not count", func(t *testing.T) {
		f := clock.NewFake(epoch)
		f.NewTimer(time.Second).Stop()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, f.BlockUntilTimers(ctx, 1), context.Canceled)
	})
}

// TestFakeStopRacingAdvanceLeavesNoStaleValue checks the Go 1.23+ guarantee
// that once Stop returns, nothing more arrives on C, even when Stop races
// with an Advance that makes the timer due.
func TestFakeStopRacingAdvanceLeavesNoStaleValue(t *testing.T) {
	for i := range 500 {
		f := clock.NewFake(epoch)
		tm := f.NewTimer(time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.Advance(time.Second)
		}()
		tm.Stop()
		<-done
		select {
		case v := <-tm.C():
			t.Fatalf("iteration %d: got stale value %v after Stop, want none", i, v)
		default:
		}
	}
}

// TestFakeConcurrentUse gives the race detector something to look at.
func TestFakeConcurrentUse(t *testing.T) {
	f := clock.NewFake(epoch)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				tm := f.NewTimer(time.Millisecond)
				tm.Reset(2 * time.Millisecond)
				tk := f.NewTicker(time.Millisecond)
				_ = f.Now()
				_ = f.Timers()
				tk.Stop()
				tm.Stop()
			}
		})
	}
	wg.Go(func() {
		for range 1000 {
			f.Advance(time.Millisecond)
		}
	})
	wg.Wait()
	assert.Zero(t, f.Timers())
}

func TestRealSmoke(t *testing.T) {
	var c clock.Clock = clock.Real{}
	before := time.Now()
	now := c.Now()
	assert.False(t, now.Before(before), "Now %v before time.Now %v", now, before)

	ctx := testCtx(t)

	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-ctx.Done():
		t.Fatal("real timer did not fire")
	}
	assert.False(t, tm.Reset(time.Hour), "Reset of a fired and received timer")
	assert.True(t, tm.Stop(), "Stop of an armed timer")

	tk := c.NewTicker(time.Millisecond)
	for range 2 {
		select {
		case <-tk.C():
		case <-ctx.Done():
			t.Fatal("real ticker did not tick")
		}
	}
	tk.Reset(time.Hour)
	tk.Stop()

	ran := make(chan struct{})
	af := c.AfterFunc(time.Millisecond, func() { close(ran) })
	select {
	case <-ran:
	case <-ctx.Done():
		t.Fatal("real AfterFunc did not run")
	}
	assert.Nil(t, af.C())
}

func TestOr(t *testing.T) {
	assert.Equal(t, clock.Real{}, clock.Or(nil))
	f := clock.NewFake(epoch)
	assert.Same(t, f, clock.Or(f))
}

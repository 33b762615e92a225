package backoff_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func fixed(r float64) func() float64 { return func() float64 { return r } }

// testCtx bounds a wait on another goroutine so that a broken test fails
// instead of hanging; it is a deadline, never a sleep.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCeiling(t *testing.T) {
	tests := []struct {
		name    string
		policy  backoff.Policy
		attempt int
		want    time.Duration
	}{
		{"zero policy starts at 100ms", backoff.Policy{}, 0, 100 * time.Millisecond},
		{"zero policy doubles", backoff.Policy{}, 3, 800 * time.Millisecond},
		{"zero policy caps at 30s", backoff.Policy{}, 9, 30 * time.Second},
		{"base is the first ceiling", backoff.Policy{Base: time.Second, Max: time.Minute}, 0, time.Second},
		{"grows by the multiplier", backoff.Policy{Base: time.Second, Max: time.Minute, Multiplier: 3}, 2, 9 * time.Second},
		{"caps at max", backoff.Policy{Base: time.Second, Max: 5 * time.Second}, 3, 5 * time.Second},
		{"base above max is capped", backoff.Policy{Base: time.Minute, Max: time.Second}, 0, time.Second},
		{"multiplier one is constant", backoff.Policy{Base: time.Second, Multiplier: 1}, 50, time.Second},
		{"multiplier below one means two", backoff.Policy{Base: time.Second, Multiplier: 0.5}, 2, 4 * time.Second},
		{"NaN multiplier means two", backoff.Policy{Base: time.Second, Multiplier: math.NaN()}, 2, 4 * time.Second},
		{"negative attempt counts as zero", backoff.Policy{Base: time.Second}, -5, time.Second},
		{"huge attempt does not overflow", backoff.Policy{}, math.MaxInt, 30 * time.Second},
		{"huge multiplier does not overflow", backoff.Policy{Multiplier: math.MaxFloat64}, 2, 30 * time.Second},
		{"infinite multiplier does not overflow", backoff.Policy{Multiplier: math.Inf(1)}, 1, 30 * time.Second},
		{"max duration cap does not overflow", backoff.Policy{Base: time.Hour, Max: math.MaxInt64}, 1000, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Ceiling(tt.attempt)
			assert.Equal(t, tt.want, got, "Ceiling(%d) of %+v", tt.attempt, tt.policy)
		})
	}
}

func TestDelayIsFullJitterOfTheCeiling(t *testing.T) {
	tests := []struct {
		name string
		rand float64
		want time.Duration
	}{
		{"zero draws no delay", 0, 0},
		{"half draws half the ceiling", 0.5, 400 * time.Millisecond},
		{"one draws the ceiling", 1, 800 * time.Millisecond},
		{"above one is clamped to the ceiling", 7, 800 * time.Millisecond},
		{"negative is clamped to zero", -1, 0},
		{"NaN is clamped to zero", math.NaN(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := backoff.Policy{Rand: fixed(tt.rand)}
			assert.Equal(t, tt.want, p.Delay(3))
		})
	}
}

func TestDelayAtTheLargestMaxDoesNotOverflow(t *testing.T) {
	for _, r := range []float64{1, math.Nextafter(1, 0)} {
		p := backoff.Policy{Base: time.Hour, Max: math.MaxInt64, Rand: fixed(r)}
		d := p.Delay(1000)
		assert.Positive(t, d, "rand %v", r)
		assert.LessOrEqual(t, d, time.Duration(math.MaxInt64), "rand %v", r)
	}
}

func TestDelayGrowsThenCaps(t *testing.T) {
	p := backoff.Policy{Base: 10 * time.Millisecond, Max: time.Second, Rand: fixed(1)}
	var prev time.Duration
	for attempt := range 100 {
		d := p.Delay(attempt)
		assert.GreaterOrEqual(t, d, prev, "attempt %d", attempt)
		assert.LessOrEqual(t, d, time.Second, "attempt %d", attempt)
		prev = d
	}
	assert.Equal(t, time.Second, prev, "reaches the cap")
}

func TestDelayStaysWithinBoundsWithRealRandomness(t *testing.T) {
	p := backoff.Policy{Base: time.Millisecond, Max: 50 * time.Millisecond}
	for _, attempt := range []int{0, 1, 5, 10, 64, 1 << 20, math.MaxInt} {
		ceiling := p.Ceiling(attempt)
		for range 1000 {
			d := p.Delay(attempt)
			if d < 0 || d > ceiling {
				t.Fatalf("Delay(%d) = %v, want within [0, %v]", attempt, d, ceiling)
			}
		}
	}
}

// waitAsync runs Wait in a goroutine that the test owns: the returned
// channel yields its result.
func waitAsync(ctx context.Context, p backoff.Policy, c clock.Clock, attempt int) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- p.Wait(ctx, c, attempt) }()
	return errc
}

func TestWaitWaitsTheDelayOnTheClock(t *testing.T) {
	f := clock.NewFake(epoch)
	p := backoff.Policy{Base: time.Second, Rand: fixed(1)}
	errc := waitAsync(context.Background(), p, f, 2) // 4s

	require.NoError(t, f.BlockUntilTimers(testCtx(t), 1))
	f.Advance(4*time.Second - 1)
	select {
	case err := <-errc:
		t.Fatalf("Wait returned %v before the delay passed", err)
	default:
	}
	f.Advance(1)
	select {
	case err := <-errc:
		assert.NoError(t, err)
	case <-testCtx(t).Done():
		t.Fatal("Wait did not return after the delay")
	}
}

func TestWaitReturnsEarlyWhenContextEnds(t *testing.T) {
	f := clock.NewFake(epoch)
	p := backoff.Policy{Base: time.Hour, Rand: fixed(1)}
	ctx, cancel := context.WithCancel(context.Background())
	errc := waitAsync(ctx, p, f, 0)

	require.NoError(t, f.BlockUntilTimers(testCtx(t), 1))
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
	assert.Zero(t, f.Timers(), "the timer is stopped")
}

func TestWaitWithEndedContextReturnsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range []float64{0, 1} {
		f := clock.NewFake(epoch)
		err := backoff.Policy{Rand: fixed(r)}.Wait(ctx, f, 0)
		assert.ErrorIs(t, err, context.Canceled, "rand %v", r)
		assert.Zero(t, f.Timers(), "rand %v: no timer armed", r)
	}
}

func TestWaitWithZeroDelayArmsNoTimer(t *testing.T) {
	f := clock.NewFake(epoch)
	assert.NoError(t, backoff.Policy{Rand: fixed(0)}.Wait(context.Background(), f, 10))
	assert.Zero(t, f.Timers())
}

func TestWaitNilClockIsReal(t *testing.T) {
	p := backoff.Policy{Base: time.Microsecond, Max: time.Microsecond}
	assert.NoError(t, p.Wait(testCtx(t), nil, 0))
}

func TestRetrierStopsAfterMaxAttempts(t *testing.T) {
	tests := []struct {
		name        string
		maxAttempts int
		wantRetries int
	}{
		{"one attempt allows no retry", 1, 0},
		{"three attempts allow two retries", 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Rand 0: no delay, so Next never blocks on the clock.
			p := backoff.Policy{MaxAttempts: tt.maxAttempts, Rand: fixed(0)}
			r := backoff.NewRetrier(p, clock.NewFake(epoch))
			retries := 0
			for {
				err := r.Next(context.Background())
				if err != nil {
					assert.ErrorIs(t, err, backoff.ErrExhausted)
					break
				}
				retries++
				require.LessOrEqual(t, retries, tt.maxAttempts, "runaway retry loop")
			}
			assert.Equal(t, tt.wantRetries, retries)
			assert.Equal(t, tt.maxAttempts, r.Attempts())
			assert.ErrorIs(t, r.Next(context.Background()), backoff.ErrExhausted, "stays exhausted")
		})
	}
}

func TestRetrierUnlimitedByDefault(t *testing.T) {
	r := backoff.NewRetrier(backoff.Policy{Rand: fixed(0)}, clock.NewFake(epoch))
	for range 1000 {
		require.NoError(t, r.Next(context.Background()))
	}
	assert.Equal(t, 1001, r.Attempts())
}

func TestRetrierWaitsGrowingDelays(t *testing.T) {
	f := clock.NewFake(epoch)
	p := backoff.Policy{Base: time.Second, Max: 3 * time.Second, Rand: fixed(1)}
	r := backoff.NewRetrier(p, f)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
		errc := make(chan error, 1)
		go func() { errc <- r.Next(context.Background()) }()
		require.NoError(t, f.BlockUntilTimers(testCtx(t), 1), "retry %d", i)
		start := f.Now()
		f.Advance(want)
		require.NoError(t, <-errc, "retry %d", i)
		assert.Equal(t, want, f.Now().Sub(start), "retry %d", i)
	}
}

func TestRetrierContextEndDoesNotCountTheRetry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := backoff.NewRetrier(backoff.Policy{MaxAttempts: 2}, clock.NewFake(epoch))
	assert.ErrorIs(t, r.Next(ctx), context.Canceled)
	assert.Equal(t, 1, r.Attempts())
}

func TestRetrierReset(t *testing.T) {
	r := backoff.NewRetrier(backoff.Policy{MaxAttempts: 2, Rand: fixed(0)}, clock.NewFake(epoch))
	require.NoError(t, r.Next(context.Background()))
	require.ErrorIs(t, r.Next(context.Background()), backoff.ErrExhausted)

	r.Reset()
	assert.Equal(t, 1, r.Attempts())
	assert.NoError(t, r.Next(context.Background()))
}

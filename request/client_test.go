package request_test

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/request"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// failing answers with code for the first n requests, then 200 {}.
type failing struct {
	n          int32
	code       request.Code
	retryAfter time.Duration
	calls      atomic.Int32
}

func (f *failing) handler() http.Handler {
	return request.NewHandler(func(ctx context.Context, _ struct{}) (greeting, error) {
		if f.calls.Add(1) <= f.n {
			return greeting{}, &request.Error{Code: f.code, Message: "not now", RetryAfter: f.retryAfter}
		}
		return greeting{Message: "ok"}, nil
	}, &request.HandlerOptions{Logger: quiet})
}

// zeroJitter makes every backoff wait zero, so retries need no clock.
func zeroJitter() func() float64 { return func() float64 { return 0 } }

func TestRetriesOnlyWhenSafe(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		key       string
		code      request.Code
		wantCalls int32
		wantErr   bool
	}{
		{"GET on Unavailable is retried", "GET", "", request.Unavailable, 2, false},
		{"PUT on TooManyRequests is retried", "PUT", "", request.TooManyRequests, 2, false},
		{"DELETE is retried", "DELETE", "", request.Unavailable, 2, false},
		{"POST without a key is not retried", "POST", "", request.Unavailable, 1, true},
		{"PATCH without a key is not retried", "PATCH", "", request.Unavailable, 1, true},
		{"POST with a key is retried", "POST", "k1", request.Unavailable, 2, false},
		{"Internal is not retried", "GET", "", request.Internal, 1, true},
		{"InvalidArgument is not retried", "GET", "", request.InvalidArgument, 1, true},
		{"DeadlineExceeded is not retried", "GET", "", request.DeadlineExceeded, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &failing{n: 1, code: tt.code}
			c := request.NewClient("http://x", &request.ClientOptions{
				Doer:  request.InMemory{Handler: f.handler()},
				Retry: request.RetryPolicy{Rand: zeroJitter()},
			})
			var opts []request.CallOption
			if tt.key != "" {
				opts = append(opts, request.IdempotencyKey(tt.key))
			}
			_, err := request.Call[greeting](testCtx(t), c, tt.method, "/", struct{}{}, opts...)
			assert.Equal(t, tt.wantCalls, f.calls.Load())
			if tt.wantErr {
				assert.ErrorIs(t, err, tt.code)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

func TestRetriesStopAtMaxAttempts(t *testing.T) {
	f := &failing{n: 100, code: request.Unavailable}
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer:  request.InMemory{Handler: f.handler()},
		Retry: request.RetryPolicy{MaxAttempts: 4, Rand: zeroJitter()},
	})
	_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
	assert.ErrorIs(t, err, request.Unavailable)
	assert.Equal(t, int32(4), f.calls.Load())
}

func TestTransportFailuresAreRetriedWhenSafe(t *testing.T) {
	var calls atomic.Int32
	d := doerFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		return nil, &net_OpError{}
	})
	c := request.NewClient("http://x", &request.ClientOptions{Doer: d, Retry: request.RetryPolicy{Rand: zeroJitter()}})
	_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
	assert.ErrorIs(t, err, request.Unavailable)
	assert.ErrorContains(t, err, "connection refused")
	assert.Equal(t, int32(3), calls.Load())

	calls.Store(0)
	_, err = request.Call[greeting](testCtx(t), c, "POST", "/", struct{}{})
	assert.ErrorIs(t, err, request.Unavailable)
	assert.Equal(t, int32(1), calls.Load(), "a POST that may have arrived is not sent again")
}

type net_OpError struct{}

func (*net_OpError) Error() string { return "dial tcp: connection refused" }

func TestRetryBudgetBoundsRetries(t *testing.T) {
	f := &failing{n: 1000, code: request.Unavailable}
	clk := clock.NewFake(epoch)
	budget := request.NewBudget(&request.BudgetOptions{Max: 3, Ratio: 0.5, PerSecond: 1, Clock: clk})
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer:   request.InMemory{Handler: f.handler()},
		Retry:  request.RetryPolicy{MaxAttempts: 10, Rand: zeroJitter()},
		Budget: budget,
		Clock:  clk,
	})
	// A full bucket (3; the call's deposit does not overfill it): three
	// retries, then no token.
	_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
	assert.ErrorIs(t, err, request.ErrBudgetExhausted)
	assert.ErrorIs(t, err, request.Unavailable, "the last answer is still there")
	assert.Equal(t, int32(4), f.calls.Load())
	assert.InDelta(t, 0, budget.Tokens(), 1e-9)

	// Each call deposits 0.5: the next has no retry, the one after one.
	for _, want := range []int32{1, 2} {
		f.calls.Store(0)
		_, err = request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
		assert.ErrorIs(t, err, request.ErrBudgetExhausted)
		assert.Equal(t, want, f.calls.Load())
	}

	// Time refills the bucket, up to Max.
	clk.Advance(time.Hour)
	assert.InDelta(t, 3, budget.Tokens(), 1e-9)
}

func TestRetryAfterIsAMinimumDelay(t *testing.T) {
	f := &failing{n: 1, code: request.Unavailable, retryAfter: 2 * time.Second}
	clk := clock.NewFake(epoch)
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer:  request.InMemory{Handler: f.handler()},
		Retry: request.RetryPolicy{Rand: zeroJitter()},
		Clock: clk,
	})
	errc := make(chan error, 1)
	go func() {
		_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
		errc <- err
	}()
	require.NoError(t, clk.BlockUntilTimers(testCtx(t), 1))
	clk.Advance(2*time.Second - time.Millisecond)
	assert.Equal(t, 1, clk.Timers(), "still waiting: Retry-After is 2s though the backoff is 0")
	assert.Equal(t, int32(1), f.calls.Load())
	clk.Advance(time.Millisecond)
	require.NoError(t, <-errc)
	assert.Equal(t, int32(2), f.calls.Load())
}

func TestBackoffWaitsOnTheClock(t *testing.T) {
	f := &failing{n: 2, code: request.Unavailable}
	clk := clock.NewFake(epoch)
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer: request.InMemory{Handler: f.handler()},
		// Rand 1 takes the ceiling: 100ms, then 200ms.
		Retry: request.RetryPolicy{BaseDelay: 100 * time.Millisecond, Rand: func() float64 { return 1 }},
		Clock: clk,
	})
	errc := make(chan error, 1)
	go func() {
		_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
		errc <- err
	}()
	for _, d := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
		require.NoError(t, clk.BlockUntilTimers(testCtx(t), 1))
		clk.Advance(d - 1)
		assert.Equal(t, 1, clk.Timers(), "waiting %v", d)
		clk.Advance(1)
	}
	require.NoError(t, <-errc)
	assert.Equal(t, int32(3), f.calls.Load())
}

func TestRetryAfterBeyondTheBoundEndsTheCall(t *testing.T) {
	f := &failing{n: 1, code: request.TooManyRequests, retryAfter: time.Hour}
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer:  request.InMemory{Handler: f.handler()},
		Retry: request.RetryPolicy{MaxRetryAfter: time.Minute},
	})
	_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
	var e *request.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, request.TooManyRequests, e.Code)
	assert.Equal(t, time.Hour, e.RetryAfter)
	assert.Equal(t, int32(1), f.calls.Load())
}

func TestNoRetryAfterTheContextEnds(t *testing.T) {
	t.Run("canceled while waiting", func(t *testing.T) {
		f := &failing{n: 100, code: request.Unavailable, retryAfter: time.Second}
		clk := clock.NewFake(epoch)
		c := request.NewClient("http://x", &request.ClientOptions{
			Doer: request.InMemory{Handler: f.handler()}, Clock: clk,
		})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := request.Call[greeting](ctx, c, "GET", "/", struct{}{})
			errc <- err
		}()
		require.NoError(t, clk.BlockUntilTimers(testCtx(t), 1))
		cancel()
		err := <-errc
		assert.ErrorIs(t, err, request.Unavailable, "the last answer")
		assert.Equal(t, int32(1), f.calls.Load())
	})
	t.Run("a Retry-After past the deadline is not waited for", func(t *testing.T) {
		f := &failing{n: 100, code: request.Unavailable, retryAfter: time.Minute}
		c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: f.handler()}})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := request.Call[greeting](ctx, c, "GET", "/", struct{}{})
		assert.ErrorIs(t, err, request.Unavailable)
		assert.Equal(t, int32(1), f.calls.Load())
	})
	t.Run("an ended context sends nothing", func(t *testing.T) {
		f := &failing{}
		c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: f.handler()}})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := request.Call[greeting](ctx, c, "GET", "/", struct{}{})
		assert.ErrorIs(t, err, request.Canceled)
		assert.ErrorIs(t, err, context.Canceled)
		assert.Zero(t, f.calls.Load())

		ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		_, err = request.Call[greeting](ctx, c, "GET", "/", struct{}{})
		assert.ErrorIs(t, err, request.DeadlineExceeded)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Zero(t, f.calls.Load())
	})
}

func TestAutomaticIdempotencyKeys(t *testing.T) {
	var keys []string
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		keys = append(keys, request.HTTPRequest(ctx).Header.Get(request.IdempotencyKeyHeader))
		if len(keys) == 1 {
			return struct{}{}, request.Unavailable
		}
		return struct{}{}, nil
	}, &request.HandlerOptions{Logger: quiet})
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer: request.InMemory{Handler: h}, IdempotencyKeys: true, Retry: request.RetryPolicy{Rand: zeroJitter()},
	})
	_, err := request.Call[struct{}](testCtx(t), c, "POST", "/", struct{}{})
	require.NoError(t, err)
	require.Len(t, keys, 2, "the POST was retried because it had a key")
	assert.NotEmpty(t, keys[0])
	assert.Equal(t, keys[0], keys[1], "one key for all attempts of a call")

	_, err = request.Call[struct{}](testCtx(t), c, "POST", "/", struct{}{})
	require.NoError(t, err)
	assert.NotEqual(t, keys[0], keys[2], "a fresh key per call")
}

// TestDeadlinePropagatesOverTwoHops: client -> A -> B. Each hop's handler
// gets a deadline that is earlier than its caller's, by at least the
// margin, and no later than the original.
func TestDeadlinePropagatesOverTwoHops(t *testing.T) {
	const margin = 50 * time.Millisecond
	deadlines := make(chan time.Time, 2)
	hdrs := make(chan string, 2)
	record := func(ctx context.Context) {
		dl, ok := ctx.Deadline()
		require.True(t, ok)
		deadlines <- dl
		hdrs <- request.HTTPRequest(ctx).Header.Get(request.TimeoutHeader)
	}
	b := request.NewHandler(func(ctx context.Context, _ struct{}) (greeting, error) {
		record(ctx)
		return greeting{Message: "from b"}, nil
	}, &request.HandlerOptions{DeadlineMargin: margin})
	toB := request.NewClient("http://b", &request.ClientOptions{Doer: request.InMemory{Handler: b}})
	a := request.NewHandler(func(ctx context.Context, _ struct{}) (greeting, error) {
		record(ctx)
		return request.Call[greeting](ctx, toB, "GET", "/", struct{}{})
	}, &request.HandlerOptions{DeadlineMargin: margin})
	toA := request.NewClient("http://a", &request.ClientOptions{Doer: request.InMemory{Handler: a}})

	original := time.Now().Add(20 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), original)
	defer cancel()
	got, err := request.Call[greeting](ctx, toA, "GET", "/", struct{}{})
	require.NoError(t, err)
	assert.Equal(t, "from b", got.Message)

	dlA, dlB := <-deadlines, <-deadlines
	hA, hB := <-hdrs, <-hdrs
	assert.True(t, dlA.Before(original.Add(-margin+time.Millisecond)), "A's deadline %v, original %v", dlA, original)
	assert.True(t, dlB.Before(dlA.Add(-margin+time.Millisecond)), "B's deadline %v, A's %v", dlB, dlA)
	assert.True(t, dlB.After(original.Add(-time.Minute)), "B's deadline %v is near the original", dlB)
	msA, _ := strconv.Atoi(hA)
	msB, _ := strconv.Atoi(hB)
	assert.Greater(t, msA, msB, "each hop passes on less time")
	assert.LessOrEqual(t, msA, 20000)
}

func TestNoDeadlineNoHeader(t *testing.T) {
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		assert.Empty(t, request.HTTPRequest(ctx).Header.Get(request.TimeoutHeader))
		return struct{}{}, nil
	}, nil)
	c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: h}})
	_, err := request.Call[struct{}](context.Background(), c, "GET", "/", struct{}{})
	require.NoError(t, err)
}

package request_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/request"
)

func respond(status int, body string) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
}

// scripted is a Doer whose nth attempt (from 1) does what script says.
type scripted struct {
	attempts atomic.Int32
	canceled atomic.Int32
	script   func(n int32, r *http.Request) (*http.Response, error)
}

func (s *scripted) Do(r *http.Request) (*http.Response, error) {
	resp, err := s.script(s.attempts.Add(1), r)
	if r.Context().Err() != nil {
		s.canceled.Add(1)
	}
	return resp, err
}

// hangs until the attempt is canceled.
func hangs(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

func TestHedgeSendsASecondAttemptAfterTheDelay(t *testing.T) {
	clk := clock.NewFake(epoch)
	d := &scripted{script: func(n int32, r *http.Request) (*http.Response, error) {
		if n == 1 {
			return hangs(r)
		}
		return respond(200, "second"), nil
	}}
	h := request.Hedge(d, &request.HedgeOptions{Delay: 30 * time.Millisecond, Clock: clk})
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, _ := http.NewRequestWithContext(testCtx(t), "GET", "http://x/", nil)
		resp, err := h.Do(r)
		done <- result{resp, err}
	}()
	require.NoError(t, clk.BlockUntilTimers(testCtx(t), 1))
	assert.LessOrEqual(t, d.attempts.Load(), int32(1), "nothing more before the delay")
	clk.Advance(30 * time.Millisecond)
	res := <-done
	require.NoError(t, res.err)
	assert.Equal(t, "second", readAll(t, res.resp.Body))
	require.NoError(t, res.resp.Body.Close())
	assert.Equal(t, int32(2), d.attempts.Load())
	assert.Equal(t, int32(1), d.canceled.Load(), "the slow attempt was canceled before Do returned")
}

func TestHedgeCases(t *testing.T) {
	secondFailed := make(chan struct{})
	tests := []struct {
		name         string
		method       string
		script       func(n int32, r *http.Request) (*http.Response, error)
		advance      bool
		wantAttempts int32
		wantStatus   int
		wantErr      bool
	}{
		{"a fast answer sends nothing more", "GET", func(int32, *http.Request) (*http.Response, error) {
			return respond(200, "first"), nil
		}, false, 1, 200, false},
		{"a POST is never hedged", "POST", func(int32, *http.Request) (*http.Response, error) {
			return respond(201, "created"), nil
		}, false, 1, 201, false},
		{"every attempt failing returns a failure", "GET", func(n int32, r *http.Request) (*http.Response, error) {
			if n == 1 {
				<-secondFailed
				return respond(503, "first"), nil
			}
			defer close(secondFailed)
			return respond(502, "second"), nil
		}, true, 2, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(epoch)
			d := &scripted{script: tt.script}
			h := request.Hedge(d, &request.HedgeOptions{Delay: time.Second, Clock: clk})
			done := make(chan *http.Response, 1)
			errc := make(chan error, 1)
			go func() {
				r, _ := http.NewRequestWithContext(testCtx(t), tt.method, "http://x/", nil)
				resp, err := h.Do(r)
				done <- resp
				errc <- err
			}()
			if tt.advance {
				require.NoError(t, clk.BlockUntilTimers(testCtx(t), 1))
				clk.Advance(time.Second)
			}
			resp, err := <-done, <-errc
			if tt.wantErr {
				assert.Error(t, err)
			} else {
				require.NoError(t, err)
				if tt.wantStatus != 0 {
					assert.Equal(t, tt.wantStatus, resp.StatusCode)
				} else {
					assert.GreaterOrEqual(t, resp.StatusCode, 500, "the last of the failures")
				}
				resp.Body.Close()
			}
			assert.Equal(t, tt.wantAttempts, d.attempts.Load())
		})
	}
}

func TestHedgeThroughTheClient(t *testing.T) {
	clk := clock.NewFake(epoch)
	var calls atomic.Int32
	entered := make(chan struct{}, 2)
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (greeting, error) {
		n := calls.Add(1)
		entered <- struct{}{}
		if n == 1 {
			<-ctx.Done()
			return greeting{}, ctx.Err()
		}
		return greeting{Message: "hedged"}, nil
	}, &request.HandlerOptions{Logger: quiet})
	var d request.Doer = request.InMemory{Handler: h}
	c := request.NewClient("http://x", &request.ClientOptions{Doer: request.Hedge(d, &request.HedgeOptions{Clock: clk})})
	done := make(chan greeting, 1)
	go func() {
		got, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
		assert.NoError(t, err)
		done <- got
	}()
	<-entered
	require.NoError(t, clk.BlockUntilTimers(testCtx(t), 1))
	clk.Advance(request.DefaultHedgeDelay)
	assert.Equal(t, "hedged", (<-done).Message)
}

func TestBreakerOpensHalfOpensAndCloses(t *testing.T) {
	clk := clock.NewFake(epoch)
	var fail atomic.Bool
	fail.Store(true)
	d := &scripted{script: func(int32, *http.Request) (*http.Response, error) {
		if fail.Load() {
			return respond(503, ""), nil
		}
		return respond(200, ""), nil
	}}
	var mu sync.Mutex
	var changes []string
	b := request.NewBreaker(d, &request.BreakerOptions{
		Failures: 3, OpenFor: 10 * time.Second, Clock: clk,
		OnStateChange: func(host string, from, to request.State) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, host+" "+from.String()+">"+to.String())
		},
	})
	do := func(host string) error {
		r, _ := http.NewRequest("GET", "http://"+host+"/", nil)
		resp, err := b.Do(r)
		if resp != nil {
			resp.Body.Close()
		}
		return err
	}

	for range 3 {
		require.NoError(t, do("a"))
	}
	assert.Equal(t, request.Open, b.State("a"))
	err := do("a")
	assert.ErrorIs(t, err, request.ErrCircuitOpen)
	assert.ErrorIs(t, err, request.Unavailable)
	var e *request.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, 10*time.Second, e.RetryAfter)
	assert.Equal(t, int32(3), d.attempts.Load(), "an open circuit sends nothing")
	assert.Equal(t, request.Closed, b.State("b"), "circuits are per host")
	require.NoError(t, do("b"))

	clk.Advance(10 * time.Second)
	assert.Equal(t, request.HalfOpen, b.State("a"))
	require.NoError(t, do("a"), "the probe fails")
	assert.Equal(t, request.Open, b.State("a"))

	clk.Advance(10 * time.Second)
	fail.Store(false)
	require.NoError(t, do("a"), "the probe succeeds")
	assert.Equal(t, request.Closed, b.State("a"))
	mu.Lock()
	assert.Equal(t, []string{"a closed>open", "a open>half-open", "a half-open>open", "a open>half-open", "a half-open>closed"}, changes)
	mu.Unlock()
}

func TestBreakerLetsOneProbeThrough(t *testing.T) {
	clk := clock.NewFake(epoch)
	var b *request.Breaker
	var nested error
	d := &scripted{script: func(n int32, r *http.Request) (*http.Response, error) {
		if n == 2 { // the probe: try another request while it is in flight
			r2, _ := http.NewRequest("GET", "http://a/", nil)
			_, nested = b.Do(r2)
		}
		return respond(500, ""), nil
	}}
	b = request.NewBreaker(d, &request.BreakerOptions{Failures: 1, Clock: clk})
	r, _ := http.NewRequest("GET", "http://a/", nil)
	_, _ = b.Do(r)
	clk.Advance(request.DefaultBreakerOpenFor)
	_, _ = b.Do(r)
	assert.ErrorIs(t, nested, request.ErrCircuitOpen)
	assert.Equal(t, int32(2), d.attempts.Load())
}

func TestBreakerIgnoresTheCallersCancellation(t *testing.T) {
	d := &scripted{script: func(_ int32, r *http.Request) (*http.Response, error) { return hangs(r) }}
	b := request.NewBreaker(d, &request.BreakerOptions{Failures: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ := http.NewRequestWithContext(ctx, "GET", "http://a/", nil)
	_, err := b.Do(r)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, request.Closed, b.State("a"))
}

func TestBreakerErrorIsNotRetriedByTheClient(t *testing.T) {
	clk := clock.NewFake(epoch)
	d := &scripted{script: func(int32, *http.Request) (*http.Response, error) { return nil, errors.New("refused") }}
	c := request.NewClient("http://a", &request.ClientOptions{
		Doer:  request.NewBreaker(d, &request.BreakerOptions{Failures: 2, Clock: clk}),
		Retry: request.RetryPolicy{MaxAttempts: 5, Rand: zeroJitter()},
	})
	_, err := request.Call[struct{}](testCtx(t), c, "GET", "/", struct{}{})
	assert.ErrorIs(t, err, request.ErrCircuitOpen, "two failures opened it; the third attempt met it and stopped")
	assert.Equal(t, int32(2), d.attempts.Load())
}

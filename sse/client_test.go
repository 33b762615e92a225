package sse_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/sse"
)

func TestClientResumesWithLastEventID(t *testing.T) {
	ctx := testCtx(t)
	clk := clock.NewFake(time.Unix(0, 0))
	f := newFixture(t, 1000, sse.Retry(1500*time.Millisecond))
	c := &sse.Client{URL: f.srv.URL + "/events/feed"}
	sse.SetClock(c, clk)

	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint(i))
	}
	var got []string
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	events := make(chan sse.Event, 100)
	go func() {
		errc <- c.Run(runCtx, func(e sse.Event) error {
			select {
			case events <- e:
			case <-runCtx.Done():
			}
			return nil
		})
	}()
	subscribed(t, f.broker, 1)
	f.publish(t, "feed", want[:10]...)
	for range 5 {
		got = append(got, (<-events).Data)
	}
	// The server drops every connection; five events are in flight or
	// unsent, five more are published while the client is away.
	f.srv.CloseClientConnections()
	subscribed(t, f.broker, 0)
	f.publish(t, "feed", want[10:]...)

	// The client waits exactly the server's retry hint before reconnecting.
	require.NoError(t, clk.BlockUntilTimers(ctx, 1))
	clk.Advance(1500*time.Millisecond - time.Nanosecond)
	assert.Equal(t, 1, clk.Timers(), "still waiting just before the retry delay")
	clk.Advance(time.Nanosecond)

	for len(got) < len(want) {
		got = append(got, (<-events).Data)
	}
	assert.Equal(t, want, got, "every event once, in order, across the reconnect")
	f.mu.Lock()
	assert.Equal(t, []string{"", f.lastID[1]}, f.lastID[:2])
	assert.NotEmpty(t, f.lastID[1], "the reconnect carried Last-Event-ID")
	f.mu.Unlock()
	stop()
	assert.ErrorIs(t, <-errc, context.Canceled)
}

func TestClientStopsOn204AndFailsOnErrors(t *testing.T) {
	ctx := testCtx(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(t *testing.T, err error)
	}{
		{name: "204 ends Run cleanly", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}, check: func(t *testing.T, err error) { assert.NoError(t, err) }},
		{name: "a non-200 status fails with the problem details", handler: func(w http.ResponseWriter, _ *http.Request) {
			problem.Write(w, problem.New(http.StatusForbidden, "not yours"))
		}, check: func(t *testing.T, err error) {
			var se *sse.StatusError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, http.StatusForbidden, se.Code)
			assert.Equal(t, "not yours", se.Problem.Detail)
		}},
		{name: "a wrong content type fails", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, "data: x\n\n")
		}, check: func(t *testing.T, err error) { assert.ErrorIs(t, err, sse.ErrContentType) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				tt.handler(w, r)
			}))
			defer srv.Close()
			c := &sse.Client{URL: srv.URL}
			err := c.Run(ctx, func(sse.Event) error { return nil })
			tt.check(t, err)
			assert.EqualValues(t, 1, calls.Load(), "no reconnect")
		})
	}
}

func TestClientHandlerErrorStopsRun(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 10)
	f.publish(t, "t", "x")
	c := &sse.Client{URL: f.srv.URL + "/events/t?lastEventId=" + "zz.0"}
	boom := errors.New("boom")
	err := c.Run(ctx, func(e sse.Event) error {
		if e.Type == sse.GapEvent {
			return nil
		}
		return boom
	})
	assert.ErrorIs(t, err, boom)
}

// Repeated failures back off with jitter, never below the retry delay and
// never above MaxRetry.
func TestClientBacksOffOnRepeatedFailures(t *testing.T) {
	ctx := testCtx(t)
	clk := clock.NewFake(time.Unix(0, 0))
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		// Accept, then hang up at once: a broken stream every time.
		w.Header().Set("Content-Type", "text/event-stream")
	}))
	defer srv.Close()
	c := &sse.Client{URL: srv.URL, Retry: time.Second, MaxRetry: 8 * time.Second}
	sse.SetClock(c, clk)
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(runCtx, func(sse.Event) error { return nil }) }()
	for i := int32(1); i <= 8; i++ {
		require.Eventually(t, func() bool { return attempts.Load() == i }, 10*time.Second, time.Millisecond)
		require.NoError(t, clk.BlockUntilTimers(ctx, 1))
		clk.Advance(time.Second - time.Nanosecond)
		assert.Equal(t, 1, clk.Timers(), "attempt %d: never sooner than the retry delay", i)
		clk.Advance(7*time.Second + time.Nanosecond) // MaxRetry reached: it must have fired
	}
	stop()
	assert.ErrorIs(t, <-errc, context.Canceled)
}

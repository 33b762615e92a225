package request_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/request"
)

// A handler's context builds its timer only when asked (Done or Err):
// these tests check that it behaves as the context.WithTimeout it
// replaces, asked or not.

// serveOnce runs h once in memory with the given TimeoutHeader ("" for
// none) and returns the handler's context, kept past its return.
func serveOnce(t *testing.T, opts *request.HandlerOptions, timeout string, fn func(ctx context.Context)) context.Context {
	t.Helper()
	kept := make(chan context.Context, 1)
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		kept <- ctx
		if fn != nil {
			fn(ctx)
		}
		return struct{}{}, nil
	}, opts)
	r, _ := http.NewRequest("GET", "http://x/", nil)
	if timeout != "" {
		r.Header.Set(request.TimeoutHeader, timeout)
	}
	resp, err := request.InMemory{Handler: h}.Do(r)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, resp.Body.Close())
	return <-kept
}

func TestHandlerContextEndsCanceledOnReturn(t *testing.T) {
	tests := []struct {
		name string
		ask  func(ctx context.Context)
	}{
		{"never asked", nil},
		{"asked Err", func(ctx context.Context) { assert.NoError(t, ctx.Err(), "alive while the handler runs") }},
		{"asked Done", func(ctx context.Context) { _ = ctx.Done() }},
		{"a child derived", func(ctx context.Context) {
			child, cancel := context.WithCancel(ctx)
			defer cancel()
			_ = child.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			ctx := serveOnce(t, &request.HandlerOptions{Logger: quiet}, "", tt.ask)
			dl, ok := ctx.Deadline()
			require.True(t, ok, "every handler has a deadline")
			assert.False(t, dl.Before(before.Add(request.DefaultMaxTimeout)), "the default MaxTimeout")
			<-ctx.Done() // closed: a hang here is the failure
			assert.ErrorIs(t, ctx.Err(), context.Canceled)
			assert.ErrorIs(t, context.Cause(ctx), context.Canceled)
		})
	}
}

// TestHandlerContextDeadlinePassesUnasked checks a handler that works past
// its deadline without asking: the first Err reports it, as the timer of
// a WithTimeout would have, and Cause agrees.
func TestHandlerContextDeadlinePassesUnasked(t *testing.T) {
	serveOnce(t, &request.HandlerOptions{Logger: quiet, DeadlineMargin: -1}, "5", func(ctx context.Context) {
		dl, ok := ctx.Deadline()
		require.True(t, ok)
		// Wait for the deadline on a context of its own: ctx is not asked.
		past, cancel := context.WithDeadline(context.Background(), dl)
		defer cancel()
		<-past.Done()
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		assert.ErrorIs(t, context.Cause(ctx), context.DeadlineExceeded)
		<-ctx.Done()
	})
}

// TestHandlerContextSoonerRequestDeadline checks that the deadline of the
// request's own context wins when it is sooner than the handler's.
func TestHandlerContextSoonerRequestDeadline(t *testing.T) {
	want := time.Now().Add(time.Hour)
	seen := make(chan time.Time, 1)
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		dl, _ := ctx.Deadline()
		seen <- dl
		return struct{}{}, nil
	}, &request.HandlerOptions{MaxTimeout: 2 * time.Hour})
	withDeadline := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithDeadline(r.Context(), want)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
	resp := send(t, withDeadline, "GET", "/", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, want.Equal(<-seen), "the request context's deadline")
}

// TestHandlerContextKeepsRequestValues checks that values put on the
// request's context by middleware are seen before and after the timer is
// built.
func TestHandlerContextKeepsRequestValues(t *testing.T) {
	type key struct{}
	var got [2]any
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		got[0] = ctx.Value(key{})
		<-ctx.Done() // the caller's deadline: builds the timer
		got[1] = ctx.Value(key{})
		return struct{}{}, nil
	}, &request.HandlerOptions{Logger: quiet, DeadlineMargin: -1})
	withValue := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, "v")))
	})
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.Header.Set(request.TimeoutHeader, "1")
	resp, err := request.InMemory{Handler: withValue}.Do(r)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, [2]any{"v", "v"}, got)
}

// TestHandlerContextConcurrentUse asks a handler's context from many
// goroutines at once: they all get the one Done channel, and the race
// detector watches the lazy build.
func TestHandlerContextConcurrentUse(t *testing.T) {
	const n = 8
	serveOnce(t, &request.HandlerOptions{Logger: quiet}, "", func(ctx context.Context) {
		var wg sync.WaitGroup
		dones := make([]<-chan struct{}, n)
		for i := range n {
			wg.Go(func() {
				switch i % 4 {
				case 0:
					dones[i] = ctx.Done()
				case 1:
					assert.NoError(t, ctx.Err())
					dones[i] = ctx.Done()
				case 2:
					child, cancel := context.WithCancel(ctx)
					cancel()
					<-child.Done()
					dones[i] = ctx.Done()
				case 3:
					_ = request.HTTPRequest(ctx)
					dones[i] = ctx.Done()
				}
			})
		}
		wg.Wait()
		for i := range n {
			assert.Equal(t, dones[0], dones[i], "one Done channel")
		}
	})
}

// TestHandlerWithoutDeadlineUsesTheRequestContext checks the uncapped
// handler: no deadline of its own, and the request's context decides.
func TestHandlerWithoutDeadlineUsesTheRequestContext(t *testing.T) {
	ctx := serveOnce(t, &request.HandlerOptions{MaxTimeout: -1}, "", func(ctx context.Context) {
		_, ok := ctx.Deadline()
		assert.False(t, ok)
		assert.Equal(t, request.HTTPRequest(ctx).Context().Done(), ctx.Done())
	})
	assert.NoError(t, ctx.Err(), "nothing to cancel: the request's context is the caller's business")
}

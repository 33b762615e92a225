package request_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/request"
)

// seenRequest is what a handler sees of its request.
type seenRequest struct {
	Method, URL, Host, RequestURI, RemoteAddr, Proto string
	ProtoMajor, ProtoMinor                           int
	Header                                           http.Header
	ContentLength                                    int64
	Body                                             string
	HasDeadline                                      bool
	CallerValue                                      any
}

type callerKey struct{}

// TestInMemoryShortcutSeesWhatDoSees checks that a Client over InMemory,
// which makes the server's request itself, hands the handler the request
// that InMemory.Do makes of the Client's.
func TestInMemoryShortcutSeesWhatDoSees(t *testing.T) {
	seen := make(chan seenRequest, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		_, hasDeadline := r.Context().Deadline()
		seen <- seenRequest{
			Method: r.Method, URL: r.URL.String(), Host: r.Host, RequestURI: r.RequestURI,
			RemoteAddr: r.RemoteAddr, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
			Header: r.Header.Clone(), ContentLength: r.ContentLength, Body: string(body),
			HasDeadline: hasDeadline, CallerValue: r.Context().Value(callerKey{}),
		}
		r.Header.Set("X-Changed", "by the handler") // its own header
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"g1"}`))
	})
	shortcut := request.InMemory{Handler: h}
	viaDo := doerFunc(shortcut.Do) // the same transport, through Do

	tests := []struct {
		name, base, method, path string
	}{
		{"a POST", "http://api.test", "POST", "/greetings"},
		{"a GET", "http://api.test:8080", "GET", "/greetings/g1"},
		{"a base path", "http://api.test/v1", "PUT", "/greetings/g-1"},
		{"a DELETE with a body", "http://api.test", "DELETE", "/greetings/g1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No deadline: its header would differ between the calls.
			ctx, cancel := context.WithCancel(context.WithValue(context.Background(), callerKey{}, "the caller's"))
			defer cancel()
			var got [2]seenRequest
			// The client's header stays the client's.
			untouched := func(ctx context.Context, info *request.CallInfo, next request.Next) error {
				err := next(ctx)
				assert.Empty(t, info.Header.Get("X-Changed"), "the handler changed the caller's header")
				return err
			}
			for _, ics := range [][]request.Interceptor{nil, {untouched}} {
				for i, d := range []request.Doer{shortcut, viaDo} {
					c := request.NewClient(tt.base, &request.ClientOptions{Doer: d, Interceptors: ics})
					resp, err := request.Call[greeting](ctx, c, tt.method, tt.path, createGreeting{Name: "ann"},
						request.WithHeader("X-Extra", "1"))
					require.NoError(t, err)
					assert.Equal(t, greeting{ID: "g1"}, resp)
					got[i] = <-seen
				}
				assert.Equal(t, got[1], got[0], "the shortcut's request, then Do's (interceptors: %d)", len(ics))
			}
			assert.False(t, got[0].HasDeadline, "the caller's deadline travels as a header, not in the context")
			assert.Nil(t, got[0].CallerValue, "the caller's values stay with the caller")
			assert.Equal(t, "in-memory", got[0].RemoteAddr)
		})
	}
}

func TestInMemoryResponseBody(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello, "))
		_, _ = w.Write([]byte("world"))
	})
	get := func(t *testing.T) *http.Response {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		resp, err := request.InMemory{Handler: h}.Do(r)
		require.NoError(t, err)
		return resp
	}

	t.Run("reads whole, in small pieces", func(t *testing.T) {
		resp := get(t)
		assert.Equal(t, int64(12), resp.ContentLength)
		var got strings.Builder
		p := make([]byte, 5)
		for {
			n, err := resp.Body.Read(p)
			got.Write(p[:n])
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		assert.Equal(t, "hello, world", got.String())
		require.NoError(t, resp.Body.Close())
	})
	t.Run("a read after Close fails, a second Close is fine", func(t *testing.T) {
		resp := get(t)
		require.NoError(t, resp.Body.Close())
		_, err := resp.Body.Read(make([]byte, 1))
		assert.ErrorContains(t, err, "read on closed response body")
		assert.NoError(t, resp.Body.Close())
	})
	t.Run("Close and Read may race", func(t *testing.T) {
		resp := get(t)
		var wg sync.WaitGroup
		wg.Go(func() {
			p := make([]byte, 1)
			for {
				if _, err := resp.Body.Read(p); err != nil {
					return
				}
			}
		})
		_ = resp.Body.Close()
		wg.Wait()
	})
}

// TestInMemoryWritesAfterReturnFail checks that a handler that keeps its
// ResponseWriter cannot touch a response once it has been delivered.
func TestInMemoryWritesAfterReturnFail(t *testing.T) {
	kept := make(chan http.ResponseWriter, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("first"))
		kept <- w
	})
	r, _ := http.NewRequest("GET", "http://x/", nil)
	resp, err := request.InMemory{Handler: h}.Do(r)
	require.NoError(t, err)
	w := <-kept
	_, err = w.Write([]byte("late"))
	assert.ErrorContains(t, err, "after its handler returned")
	assert.Equal(t, "first", readAll(t, resp.Body))
}

// TestInMemoryPanicsAndAbortsKeepNoResponse checks that a handler that
// panicked after writing leaves nothing behind: the next exchange, which
// may reuse its buffer, sees only its own body.
func TestInMemoryPanicsAndAbortsKeepNoResponse(t *testing.T) {
	panics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("half an answer"))
		panic("kaboom")
	})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	for range 3 {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		_, err := request.InMemory{Handler: panics}.Do(r)
		require.ErrorContains(t, err, "panicked: kaboom")
		resp, err := request.InMemory{Handler: ok}.Do(r)
		require.NoError(t, err)
		assert.Equal(t, "ok", readAll(t, resp.Body))
		require.NoError(t, resp.Body.Close())
	}
}

// TestInMemoryCallerGoneMidHandler checks that the server's context ends
// when the caller's does, through the shortcut and through Do, and that a
// context derived from it follows.
func TestInMemoryCallerGoneMidHandler(t *testing.T) {
	for _, name := range []string{"shortcut", "Do"} {
		t.Run(name, func(t *testing.T) {
			started := make(chan struct{})
			h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
				child, cancel := context.WithCancel(ctx)
				defer cancel()
				close(started)
				<-child.Done()
				return struct{}{}, child.Err()
			}, &request.HandlerOptions{Logger: quiet})
			var d request.Doer = request.InMemory{Handler: h}
			if name == "Do" {
				d = doerFunc(request.InMemory{Handler: h}.Do)
			}
			c := request.NewClient("http://x", &request.ClientOptions{Doer: d})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, err := request.Call[struct{}](ctx, c, "GET", "/", struct{}{})
				errc <- err
			}()
			<-started
			cancel()
			err := <-errc
			assert.ErrorIs(t, err, request.Canceled)
			assert.ErrorIs(t, err, context.Canceled)
		})
	}
}

// TestInMemoryRetriesSendTheCallersHeader checks that a handler that
// changes its request's header does not change what a retry sends.
func TestInMemoryRetriesSendTheCallersHeader(t *testing.T) {
	var seen []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("X-Mark"))
		r.Header.Set("X-Mark", "changed by the handler")
		if len(seen) < 3 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer: request.InMemory{Handler: h}, Retry: request.RetryPolicy{MaxAttempts: 3, Rand: zeroJitter()},
	})
	_, err := request.Call[struct{}](context.Background(), c, "GET", "/", struct{}{}, request.WithHeader("X-Mark", "the caller's"))
	require.NoError(t, err)
	assert.Equal(t, []string{"the caller's", "the caller's", "the caller's"}, seen)
}

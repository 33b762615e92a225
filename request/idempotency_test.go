package request_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/request"
)

// counter is a create endpoint that counts its executions.
type counter struct {
	runs    atomic.Int32
	fail    atomic.Int32 // answer Unavailable this many more times
	entered chan struct{}
	release chan struct{}
}

func (c *counter) handler() http.Handler {
	return request.NewHandler(func(ctx context.Context, in createGreeting) (greeting, error) {
		n := c.runs.Add(1)
		if c.entered != nil {
			c.entered <- struct{}{}
			<-c.release
		}
		if c.fail.Add(-1) >= 0 {
			return greeting{}, request.Errorf(request.Unavailable, "try again")
		}
		request.ResponseHeader(ctx).Set("Location", "/greetings/g1")
		return greeting{ID: "g" + strings.Repeat("1", int(n)), Message: "hello, " + in.Name}, nil
	}, &request.HandlerOptions{Logger: quiet, Status: http.StatusCreated})
}

func post(t *testing.T, h http.Handler, key, auth, body string) *http.Response {
	t.Helper()
	r := httptest.NewRequest("POST", "/greetings", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set(request.IdempotencyKeyHeader, key)
	}
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func newIdempotent(c *counter, clk clock.Clock, opts *request.IdempotencyOptions) (http.Handler, *request.MemoryStore) {
	store := request.NewMemoryStore(&request.MemoryStoreOptions{Clock: clk})
	if opts == nil {
		opts = &request.IdempotencyOptions{Logger: quiet}
	}
	return request.Idempotency(store, opts)(c.handler()), store
}

func TestIdempotencyReplaysTheFirstOutcome(t *testing.T) {
	c := &counter{}
	h, _ := newIdempotent(c, nil, nil)
	first := post(t, h, "k1", "Bearer ann", `{"name":"ann"}`)
	firstBody := readAll(t, first.Body)
	second := post(t, h, "k1", "Bearer ann", `{"name":"ann"}`)

	assert.Equal(t, int32(1), c.runs.Load(), "the operation ran once")
	assert.Equal(t, http.StatusCreated, second.StatusCode)
	assert.Equal(t, firstBody, readAll(t, second.Body))
	assert.Equal(t, "/greetings/g1", second.Header.Get("Location"))
	assert.Equal(t, "true", second.Header.Get(request.ReplayedHeader))
	assert.Empty(t, first.Header.Get(request.ReplayedHeader))

	// Another caller's key is another key; no key means no idempotency.
	post(t, h, "k1", "Bearer bob", `{"name":"ann"}`)
	assert.Equal(t, int32(2), c.runs.Load())
	post(t, h, "", "Bearer ann", `{"name":"ann"}`)
	post(t, h, "", "Bearer ann", `{"name":"ann"}`)
	assert.Equal(t, int32(4), c.runs.Load())
}

func TestIdempotencyAnswers409WhileInFlight(t *testing.T) {
	c := &counter{entered: make(chan struct{}), release: make(chan struct{})}
	h, _ := newIdempotent(c, nil, nil)
	done := make(chan *http.Response)
	go func() { done <- post(t, h, "k1", "", `{"name":"ann"}`) }()
	<-c.entered

	resp := post(t, h, "k1", "", `{"name":"ann"}`)
	d, ok := problem.Read(resp)
	require.True(t, ok)
	assert.Equal(t, http.StatusConflict, d.Status)
	assert.Equal(t, "conflict", d.Extensions["code"])
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	close(c.release)
	assert.Equal(t, http.StatusCreated, (<-done).StatusCode)
	assert.Equal(t, int32(1), c.runs.Load())
}

func TestIdempotencyAnswers422ForAnotherPayload(t *testing.T) {
	c := &counter{}
	h, _ := newIdempotent(c, nil, nil)
	post(t, h, "k1", "", `{"name":"ann"}`)
	resp := post(t, h, "k1", "", `{"name":"bob"}`)
	d, ok := problem.Read(resp)
	require.True(t, ok)
	assert.Equal(t, http.StatusUnprocessableEntity, d.Status)
	assert.Equal(t, "invalid_argument", d.Extensions["code"])
	assert.Contains(t, d.Detail, "different request")
	assert.Equal(t, int32(1), c.runs.Load())
}

func TestIdempotencyRunsAgainAfterA5xx(t *testing.T) {
	c := &counter{}
	c.fail.Store(1)
	h, _ := newIdempotent(c, nil, nil)
	assert.Equal(t, http.StatusServiceUnavailable, post(t, h, "k1", "", `{"name":"ann"}`).StatusCode)
	assert.Equal(t, http.StatusCreated, post(t, h, "k1", "", `{"name":"ann"}`).StatusCode)
	assert.Equal(t, int32(2), c.runs.Load())
	assert.Equal(t, "true", post(t, h, "k1", "", `{"name":"ann"}`).Header.Get(request.ReplayedHeader))
}

func TestIdempotencyForgetsAfterTTL(t *testing.T) {
	clk := clock.NewFake(epoch)
	c := &counter{}
	h, store := newIdempotent(c, clk, &request.IdempotencyOptions{TTL: time.Hour, Logger: quiet})
	post(t, h, "k1", "", `{"name":"ann"}`)
	clk.Advance(time.Hour - time.Second)
	post(t, h, "k1", "", `{"name":"ann"}`)
	assert.Equal(t, int32(1), c.runs.Load())
	clk.Advance(time.Second)
	post(t, h, "k1", "", `{"name":"ann"}`)
	assert.Equal(t, int32(2), c.runs.Load())
	assert.Equal(t, 1, store.Len())
}

func TestIdempotencyBounds(t *testing.T) {
	clk := clock.NewFake(epoch)
	c := &counter{}
	store := request.NewMemoryStore(&request.MemoryStoreOptions{MaxRecords: 2, Clock: clk})
	h := request.Idempotency(store, &request.IdempotencyOptions{TTL: time.Minute, MaxBodyBytes: 64, Logger: quiet})(c.handler())
	tests := []struct {
		name       string
		key, body  string
		wantStatus int
	}{
		{"a key that is too long", strings.Repeat("k", request.MaxIdempotencyKeyLength+1), `{"name":"a"}`, 400},
		{"a body over the limit", "k0", `{"name":"` + strings.Repeat("a", 70) + `"}`, 413},
		{"the first key", "k1", `{"name":"a"}`, 201},
		{"the second key", "k2", `{"name":"a"}`, 201},
		{"a third key in a full store", "k3", `{"name":"a"}`, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, h, tt.key, "", tt.body)
			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			if tt.wantStatus >= 400 {
				_, ok := problem.Read(resp)
				assert.True(t, ok)
			}
		})
	}
	clk.Advance(time.Minute)
	assert.Equal(t, http.StatusCreated, post(t, h, "k3", "", `{"name":"a"}`).StatusCode, "expired records are swept at the bound")
}

func TestIdempotencyResponseTooLargeToKeepRunsAgain(t *testing.T) {
	c := &counter{}
	store := request.NewMemoryStore(nil)
	h := request.Idempotency(store, &request.IdempotencyOptions{MaxBodyBytes: 20, Logger: quiet})(c.handler())
	assert.Equal(t, http.StatusCreated, post(t, h, "k1", "", `{"name":"a"}`).StatusCode)
	assert.Equal(t, http.StatusCreated, post(t, h, "k1", "", `{"name":"a"}`).StatusCode)
	assert.Equal(t, int32(2), c.runs.Load())
	assert.Zero(t, store.Len())
}

func TestIdempotencyAbandonsOnPanic(t *testing.T) {
	store := request.NewMemoryStore(nil)
	h := request.Idempotency(store, nil)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("raw") }))
	r, _ := http.NewRequest("POST", "http://x/", strings.NewReader("{}"))
	r.Header.Set(request.IdempotencyKeyHeader, "k1")
	_, err := request.InMemory{Handler: h}.Do(r)
	assert.Error(t, err)
	assert.Zero(t, store.Len(), "the reservation is dropped, so a retry runs again")
}

// TestIdempotentRetryThroughTheClient: the first attempt's answer is
// lost (a 503 from in front of the handler); the retry with the same key
// runs the operation, and a third call with that key replays it.
func TestIdempotentRetryThroughTheClient(t *testing.T) {
	c := &counter{}
	h, _ := newIdempotent(c, nil, nil)
	var lost atomic.Bool
	flaky := doerFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := request.InMemory{Handler: h}.Do(r)
		if err == nil && !lost.Swap(true) {
			return nil, &net_OpError{} // the answer never arrived
		}
		return resp, err
	})
	cl := request.NewClient("http://x", &request.ClientOptions{Doer: flaky, Retry: request.RetryPolicy{Rand: zeroJitter()}})
	got, err := request.Call[greeting](testCtx(t), cl, "POST", "/greetings", createGreeting{Name: "ann"}, request.IdempotencyKey("order-7"))
	require.NoError(t, err)
	assert.Equal(t, "g1", got.ID)
	assert.Equal(t, int32(1), c.runs.Load(), "retried, but ran once")
}

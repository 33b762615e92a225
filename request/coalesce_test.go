package request_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/request"
)

// TestCoalesceMergesConcurrentReads: N identical GETs, one execution. The
// handler holds the flight open until all N have joined it.
func TestCoalesceMergesConcurrentReads(t *testing.T) {
	const n = 8
	var joined sync.WaitGroup
	joined.Add(n)
	defer request.SetCoalesceJoined(func(string) { joined.Done() })()

	var runs atomic.Int32
	h := request.Coalesce(nil)(request.NewHandler(func(ctx context.Context, _ struct{}) (greeting, error) {
		joined.Wait()
		request.ResponseHeader(ctx).Set("X-Run", strconv.Itoa(int(runs.Add(1))))
		return greeting{ID: request.PathValue(ctx, "id")}, nil
	}, nil))
	mux := http.NewServeMux()
	mux.Handle("GET /greetings/{id}", h)

	c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: mux}})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			got, err := request.Call[greeting](testCtx(t), c, "GET", "/greetings/g1", struct{}{})
			assert.NoError(t, err)
			assert.Equal(t, "g1", got.ID)
		})
	}
	wg.Wait()
	assert.Equal(t, int32(1), runs.Load())
}

func TestCoalesceKeepsDifferentKeysApart(t *testing.T) {
	var runs atomic.Int32
	h := request.Coalesce(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		_, _ = w.Write([]byte(r.URL.Path))
	}))
	for _, tt := range []struct{ method, path, auth string }{
		{"GET", "/a", ""}, {"GET", "/b", ""}, {"GET", "/a", "Bearer x"}, {"POST", "/a", ""},
	} {
		r := httptest.NewRequest(tt.method, tt.path, nil)
		r.Header.Set("Authorization", tt.auth)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		assert.Equal(t, tt.path, w.Body.String())
	}
	assert.Equal(t, int32(4), runs.Load(), "sequential requests are never merged")
}

func TestCoalescePanicAndOverflow(t *testing.T) {
	panics := request.Coalesce(nil)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("x") }))
	w := httptest.NewRecorder()
	panics.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	d, ok := problem.Read(w.Result())
	require.True(t, ok)
	assert.Equal(t, 500, d.Status)

	var runs atomic.Int32
	big := request.Coalesce(&request.CoalesceOptions{MaxBodyBytes: 4})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		_, _ = w.Write([]byte("0123456789"))
	}))
	w = httptest.NewRecorder()
	big.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, "0123456789", w.Body.String(), "too large to share: the request runs on its own")
	assert.Equal(t, int32(2), runs.Load())
}

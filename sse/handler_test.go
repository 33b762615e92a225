package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/sse"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fromPath streams the {topic} path value; "secret.*" needs a token.
func fromPath(r *http.Request) (string, error) {
	topic := r.PathValue("topic")
	if strings.HasPrefix(topic, "secret.") {
		switch r.Header.Get("Authorization") {
		case "":
			return "", pubsub.ErrUnauthorized
		case "Bearer ok":
		default:
			return "", pubsub.ErrForbidden
		}
	}
	return topic, nil
}

type fixture struct {
	broker *pubsub.Broker
	h      *sse.Handler
	srv    *httptest.Server
	mu     sync.Mutex
	lastID []string // Last-Event-ID of every request
}

func newFixture(t *testing.T, history int, opts ...sse.Option) *fixture {
	t.Helper()
	f := &fixture{broker: pubsub.NewBroker(pubsub.History(history, 0))}
	f.h = sse.NewHandler(f.broker, fromPath, opts...)
	mux := http.NewServeMux()
	mux.Handle("GET /events/{topic}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.lastID = append(f.lastID, r.Header.Get("Last-Event-ID"))
		f.mu.Unlock()
		f.h.ServeHTTP(w, r)
	}))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		require.NoError(t, f.h.Shutdown(context.Background()))
		f.srv.Close()
		f.broker.Close()
	})
	return f
}

func (f *fixture) publish(t *testing.T, topic string, data ...string) []pubsub.Cursor {
	t.Helper()
	var cs []pubsub.Cursor
	for _, d := range data {
		c, err := f.broker.Publish(context.Background(), pubsub.Message{Topic: topic, Data: []byte(d)})
		require.NoError(t, err)
		cs = append(cs, c)
	}
	return cs
}

// open starts a stream and returns its decoder once the headers are in.
func (f *fixture) open(t *testing.T, ctx context.Context, path string, hdr http.Header) (*http.Response, *sse.Decoder) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+path, nil)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp, sse.NewDecoder(resp.Body)
}

// subscribed waits until the broker has n subscribers (the handler
// subscribes after the response headers are sent).
func subscribed(t *testing.T, b *pubsub.Broker, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.Stats().Subscribers == n }, 10*time.Second, time.Millisecond)
}

func next(t *testing.T, d *sse.Decoder) sse.Event {
	t.Helper()
	e, err := d.Next()
	require.NoError(t, err)
	return e
}

func TestHandlerStreamsWithHeadersAndCursorIDs(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 100, sse.EventType(func(m *pubsub.Message) string { return m.Topic }))
	resp, d := f.open(t, ctx, "/events/orders.*", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	assert.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))

	subscribed(t, f.broker, 1)
	cs := f.publish(t, "orders.eu", "line 1\nline 2", "second")
	e := next(t, d)
	assert.Equal(t, sse.Event{ID: string(cs[0]), Type: "orders.eu", Data: "line 1\nline 2", Retry: sse.DefaultRetry}, e)
	e = next(t, d)
	assert.Equal(t, sse.Event{ID: string(cs[1]), Type: "orders.eu", Data: "second"}, e)
}

func TestHandlerResumesExactlyOnce(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 1000)
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprint(i))
	}

	// First connection: read three events, then drop it.
	connCtx, drop := context.WithCancel(ctx)
	_, d := f.open(t, connCtx, "/events/feed", nil)
	subscribed(t, f.broker, 1)
	f.publish(t, "feed", want[:5]...)
	var got []string
	var last string
	for range 3 {
		e := next(t, d)
		got, last = append(got, e.Data), e.ID
	}
	drop()
	subscribed(t, f.broker, 0)
	f.publish(t, "feed", want[5:]...) // published while away

	// Reconnect with Last-Event-ID: the rest, once each, in order.
	_, d = f.open(t, ctx, "/events/feed", http.Header{"Last-Event-ID": {last}})
	for len(got) < len(want) {
		got = append(got, next(t, d).Data)
	}
	assert.Equal(t, want, got)

	// The query parameter works the same for clients that cannot set headers.
	_, d = f.open(t, ctx, "/events/feed?lastEventId="+last, nil)
	assert.Equal(t, want[3], next(t, d).Data)
}

func TestHandlerSendsGapEvent(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 2)
	cs := f.publish(t, "feed", "1", "2", "3", "4")

	_, d := f.open(t, ctx, "/events/feed", http.Header{"Last-Event-ID": {string(cs[0])}})
	e := next(t, d)
	assert.Equal(t, sse.GapEvent, e.Type)
	var body struct{ Reason, After string }
	require.NoError(t, json.Unmarshal([]byte(e.Data), &body))
	assert.Equal(t, "trimmed", body.Reason)
	assert.Equal(t, string(cs[0]), body.After)
	assert.Equal(t, "3", next(t, d).Data, "continues from the oldest retained")
	assert.Equal(t, "4", next(t, d).Data)

	_, d = f.open(t, ctx, "/events/feed", http.Header{"Last-Event-ID": {"not a cursor"}})
	e = next(t, d)
	assert.Equal(t, sse.GapEvent, e.Type)
	assert.Contains(t, e.Data, "unknown cursor")
	subscribed(t, f.broker, 2)
	f.publish(t, "feed", "5")
	assert.Equal(t, "5", next(t, d).Data, "then live")
}

func TestHandlerRefusesBeforeStreaming(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 0)
	tests := []struct {
		name   string
		method string
		path   string
		auth   string
		want   int
	}{
		{name: "no credentials", method: http.MethodGet, path: "/events/secret.x", want: http.StatusUnauthorized},
		{name: "wrong credentials", method: http.MethodGet, path: "/events/secret.x", auth: "Bearer no", want: http.StatusForbidden},
		{name: "invalid pattern", method: http.MethodGet, path: "/events/a..b", want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tt.method, f.srv.URL+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, tt.want, resp.StatusCode)
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
		})
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/events/x", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	assert.Equal(t, http.MethodGet, rec.Header().Get("Allow"))

	_, d := f.open(t, ctx, "/events/secret.x", http.Header{"Authorization": {"Bearer ok"}})
	subscribed(t, f.broker, 1)
	f.publish(t, "secret.x", "granted")
	assert.Equal(t, "granted", next(t, d).Data)
}

func TestHandlerHeartbeatOnTheClock(t *testing.T) {
	ctx := testCtx(t)
	clk := clock.NewFake(time.Unix(0, 0))
	f := newFixture(t, 0, sse.Heartbeat(time.Minute), sse.WithClock(clk))
	resp, _ := f.open(t, ctx, "/events/quiet", nil)
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "retry: 3000\n", line)
	_, _ = r.ReadString('\n') // the blank line after it

	for range 2 {
		require.NoError(t, clk.BlockUntilTimers(ctx, 1))
		clk.Advance(time.Minute)
		line, err = r.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, ":\n", line, "a heartbeat comment")
		_, _ = r.ReadString('\n')
	}
}

func TestHandlerMaxLifetimeEndsStream(t *testing.T) {
	ctx := testCtx(t)
	clk := clock.NewFake(time.Unix(0, 0))
	f := newFixture(t, 0, sse.Heartbeat(0), sse.MaxLifetime(time.Hour), sse.WithClock(clk))
	_, d := f.open(t, ctx, "/events/t", nil)
	require.NoError(t, clk.BlockUntilTimers(ctx, 1))
	clk.Advance(time.Hour) // the jittered lifetime is at most the bound
	_, err := d.Next()
	assert.ErrorIs(t, err, io.EOF, "the server ended the stream")
}

func TestHandlerShutdownEndsStreamsAndRefusesNew(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 0)
	var decoders []*sse.Decoder
	for range 3 {
		_, d := f.open(t, ctx, "/events/t", nil)
		decoders = append(decoders, d)
	}
	subscribed(t, f.broker, 3)
	assert.Equal(t, 3, f.h.Streams())
	require.NoError(t, f.h.Shutdown(ctx))
	for _, d := range decoders {
		_, err := d.Next()
		assert.ErrorIs(t, err, io.EOF)
	}
	assert.Equal(t, 0, f.h.Streams())
	resp, err := http.Get(f.srv.URL + "/events/t")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}

func TestHandlerEndsWhenBrokerCloses(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 0)
	_, d := f.open(t, ctx, "/events/t", nil)
	subscribed(t, f.broker, 1)
	f.broker.Close()
	_, err := d.Next()
	assert.ErrorIs(t, err, io.EOF)
}

func TestHandlerMaxStreams(t *testing.T) {
	ctx := testCtx(t)
	f := newFixture(t, 0, sse.MaxStreams(1))
	f.open(t, ctx, "/events/t", nil)
	subscribed(t, f.broker, 1)
	resp, err := http.Get(f.srv.URL + "/events/t")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// blockingWriter is a ResponseWriter whose writes wait for the test: a
// client that has stopped reading.
type blockingWriter struct {
	header http.Header
	gate   chan struct{}
	wrote  chan struct{} // a write started
	mu     sync.Mutex
	body   strings.Builder
}

func (w *blockingWriter) Header() http.Header { return w.header }
func (w *blockingWriter) WriteHeader(int)     {}
func (w *blockingWriter) Flush()              {}
func (w *blockingWriter) Write(b []byte) (int, error) {
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(b)
}

func TestHandlerDisconnectsSlowClient(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	h := sse.NewHandler(b, func(*http.Request) (string, error) { return "t", nil }, sse.Buffer(4), sse.Heartbeat(0))
	w := &blockingWriter{header: http.Header{}, gate: make(chan struct{}), wrote: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx))
	}()
	<-w.wrote            // the preamble is being written
	w.gate <- struct{}{} // let it through
	subscribed(t, b, 1)
	_, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("first")})
	require.NoError(t, err)
	<-w.wrote // stuck writing "first"
	for i := range 10 {
		_, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte(fmt.Sprint(i))})
		require.NoError(t, err, "a slow client never blocks the publisher")
	}
	close(w.gate) // the client reads again: too late, it fell 10 behind a buffer of 4
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the slow stream was not ended")
	}
	assert.Equal(t, 0, b.Stats().Subscribers)
	w.mu.Lock()
	defer w.mu.Unlock()
	assert.NotContains(t, w.body.String(), "data: 9", "nothing past the overflow was sent")
}

func TestHandlerOverHTTP2(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	h := sse.NewHandler(b, func(*http.Request) (string, error) { return "t", nil })
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	defer h.Shutdown(ctx)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 2, resp.ProtoMajor)
	subscribed(t, b, 1)
	_, err = b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("over h2")})
	require.NoError(t, err)
	e, err := sse.NewDecoder(resp.Body).Next()
	require.NoError(t, err)
	assert.Equal(t, "over h2", e.Data)
}

func TestHandlerCoalescesBacklogIntoOneFlush(t *testing.T) {
	ctx := testCtx(t)
	b := pubsub.NewBroker()
	defer b.Close()
	h := sse.NewHandler(b, func(*http.Request) (string, error) { return "t", nil }, sse.Heartbeat(0))
	w := &countingWriter{ResponseRecorder: httptest.NewRecorder()}
	reqCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(reqCtx))
	}()
	subscribed(t, b, 1)
	// Publish a burst while the stream is held up in its first write.
	held := w.hold()
	_, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("0")})
	require.NoError(t, err)
	<-held
	for i := 1; i < 50; i++ {
		_, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	w.release()
	require.Eventually(t, func() bool { return w.events() == 50 }, 10*time.Second, time.Millisecond)
	cancel()
	<-done
	assert.LessOrEqual(t, w.flushes(), 3, "preamble, the first event's batch, at most one more")
}

type countingWriter struct {
	*httptest.ResponseRecorder
	mu       sync.Mutex
	gate     chan struct{}
	held     chan struct{}
	nflushes int
	nevents  int
}

// hold makes the next write wait for release; the returned channel is
// closed when that write has started.
func (w *countingWriter) hold() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gate, w.held = make(chan struct{}), make(chan struct{})
	return w.held
}
func (w *countingWriter) release() {
	w.mu.Lock()
	close(w.gate)
	w.gate = nil
	w.mu.Unlock()
}
func (w *countingWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	gate, held := w.gate, w.held
	if gate != nil {
		w.held = nil
	}
	w.mu.Unlock()
	if gate != nil && held != nil {
		close(held)
		<-gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.nevents += strings.Count(string(b), "data: ")
	return w.ResponseRecorder.Write(b)
}
func (w *countingWriter) Flush() {
	w.mu.Lock()
	w.nflushes++
	w.mu.Unlock()
}
func (w *countingWriter) flushes() int { w.mu.Lock(); defer w.mu.Unlock(); return w.nflushes }
func (w *countingWriter) events() int  { w.mu.Lock(); defer w.mu.Unlock(); return w.nevents }

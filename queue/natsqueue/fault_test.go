package natsqueue_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/internal/faultproxy"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
)

func proxyTo(t *testing.T, rawURL string) *faultproxy.Proxy {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	host := u.Host
	if u.Port() == "" {
		host += ":4222"
	}
	p, err := faultproxy.New(host)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runWorker runs a worker over q until the test ends.
func runWorker(t *testing.T, q *queue.Queue, h queue.Handler, opts queue.WorkerOptions) *queue.Worker {
	t.Helper()
	opts.Logger = quiet()
	w := queue.NewWorker(q, h, opts)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
		<-ran
	})
	return w
}

// The engine goes away twice and comes back while a producer and a worker
// run through it: the worker keeps running and reconnects, and every
// enqueue that was acknowledged is processed.
func TestWorkerSurvivesOutage(t *testing.T) {
	rawURL := enginetest.NATSURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	admin := connect(t, rawURL)
	ns := namespace(t, admin)
	proxy := proxyTo(t, rawURL)
	nc := connect(t, "nats://"+proxy.Addr())
	opts := &natsqueue.Options{Namespace: ns, Timeout: time.Second, Recheck: 100 * time.Millisecond}
	b := open(t, nc, opts)
	q, err := queue.New(b, "jobs")
	require.NoError(t, err)

	var mu sync.Mutex
	processed := make(map[string]bool)
	acked := make(map[string]bool)
	progress := make(chan struct{}, 1)
	runWorker(t, q, func(_ context.Context, d queue.Delivery) error {
		mu.Lock()
		processed[string(d.Body)] = true
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
		return nil
	}, queue.WorkerOptions{Concurrency: 4, Lease: time.Second, Wait: time.Second})

	const n = 300
	outage := func() {
		proxy.Pause()
		require.Eventually(t, func() bool { return !nc.IsConnected() }, 10*time.Second, 5*time.Millisecond)
		// While the engine is away, enqueues fail instead of reporting a
		// message as stored.
		_, err := q.Enqueue(ctx, queue.Message{Body: []byte("during outage")})
		require.ErrorIs(t, err, natsqueue.ErrUnavailable)
		proxy.Resume()
	}
	for i := range n {
		body := strconv.Itoa(i)
		for {
			_, err := q.Enqueue(ctx, queue.Message{Body: []byte(body), DedupKey: body})
			if err == nil {
				break
			}
			require.NoError(t, ctx.Err(), "enqueue %d never succeeded: %v", i, err)
			select { // the connection is coming back: wait for it, not for time
			case <-progress:
			case <-ctx.Done():
			default:
				require.Eventually(t, nc.IsConnected, 10*time.Second, 5*time.Millisecond)
			}
		}
		acked[body] = true
		if i == n/3 || i == 2*n/3 {
			outage()
		}
	}
	require.GreaterOrEqual(t, proxy.Accepted(), 3, "the connection was cut and made again")
	for {
		mu.Lock()
		missing := 0
		for body := range acked {
			if !processed[body] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-progress:
		case <-ctx.Done():
			t.Fatalf("%d acknowledged enqueues were never processed", missing)
		}
	}
}

// Close ends a waiting Receive and a running Worker, stops every goroutine
// the backend started, and leaves the caller's connection open.
func TestCloseReleasesEverything(t *testing.T) {
	rawURL := enginetest.NATSURL(t)
	admin := connect(t, rawURL)
	ns := namespace(t, admin)
	before := goleak.IgnoreCurrent()

	nc, err := nats.Connect(rawURL)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := natsqueue.New(ctx, nc, &natsqueue.Options{Namespace: ns, MaxBytes: testMaxBytes})
	require.NoError(t, err)
	q, err := queue.New(b, "jobs")
	require.NoError(t, err)
	_, err = q.Enqueue(ctx, queue.Message{Body: []byte("later"), Delay: time.Hour}) // a delay mover runs
	require.NoError(t, err)

	waiting := make(chan error, 1)
	go func() {
		_, err := q.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
		waiting <- err
	}()
	w := queue.NewWorker(q, func(context.Context, queue.Delivery) error { return nil }, queue.WorkerOptions{Logger: quiet()})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()

	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "idempotent")
	assert.ErrorIs(t, <-waiting, queue.ErrClosed)
	err = <-ran
	assert.True(t, errors.Is(err, queue.ErrClosed), "the worker ends with ErrClosed, got %v", err)
	assert.True(t, nc.IsConnected(), "the caller's connection stays open")
	nc.Close()
	goleak.VerifyNone(t, before)
}

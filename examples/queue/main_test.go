package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/enginetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is an io.Writer the worker and the test share.
type syncBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	written chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	select {
	case s.written <- struct{}{}:
	default:
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEnqueueOverHTTPIsProcessed(t *testing.T) {
	testEnqueueOverHTTPIsProcessed(t, config{})
}

// The same program on each engine: one flag, nothing else changes.
func TestEnqueueOverHTTPIsProcessedOnEngines(t *testing.T) {
	// A fixed namespace: reruns reuse it instead of leaving one behind each
	// time; what an earlier run left in it is processed too, harmlessly.
	const ns = "example_queue_test"
	t.Run("postgres", func(t *testing.T) {
		testEnqueueOverHTTPIsProcessed(t, config{postgres: enginetest.PostgresURL(t), namespace: ns})
	})
	t.Run("redis", func(t *testing.T) {
		testEnqueueOverHTTPIsProcessed(t, config{redis: enginetest.RedisURL(t), namespace: ns})
	})
	t.Run("nats", func(t *testing.T) {
		testEnqueueOverHTTPIsProcessed(t, config{nats: enginetest.NATSURL(t), namespace: ns})
	})
}

func TestRefusesTwoEngines(t *testing.T) {
	err := run(context.Background(), config{redis: "redis://x", nats: "nats://y"}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "at most one") {
		t.Fatalf("run with two engines: %v; want a refusal", err)
	}
}

func testEnqueueOverHTTPIsProcessed(t *testing.T, cfg config) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := &syncBuffer{written: make(chan struct{}, 1)}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	cfg.addr, cfg.workers = "127.0.0.1:0", 2
	go func() { done <- run(runCtx, cfg, out, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}

	resp, err := http.Post("http://"+addr+"/queues/jobs/messages", "text/plain", strings.NewReader("resize photo 42"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || res.ID == "" {
		t.Fatalf("enqueue: status %d, id %q; want 202 with an id", resp.StatusCode, res.ID)
	}
	for !strings.Contains(out.String(), "processed "+res.ID) {
		select {
		case <-out.written:
		case <-ctx.Done():
			t.Fatalf("the worker did not log the message; output:\n%s", out.String())
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

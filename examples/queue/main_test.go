package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := &syncBuffer{written: make(chan struct{}, 1)}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() { done <- run(runCtx, "127.0.0.1:0", 2, out, ready) }()
	addr := <-ready

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

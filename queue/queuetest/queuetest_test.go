package queuetest_test

import (
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/queuetest"
)

// The suite in real-time mode, on the memory backend with the real clock:
// the mode the Redis and NATS backends use, checked here without an engine.
func TestRealTimeMode(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time mode waits out short leases")
	}
	queuetest.Run(t, func(_ *testing.T, _ *clock.Fake) queue.Backend {
		return queue.NewMemory(queue.MemoryOptions{DedupWindow: 200 * time.Millisecond})
	}, queuetest.Options{RealTime: true, Lease: 300 * time.Millisecond, DedupWindow: 600 * time.Millisecond})
}

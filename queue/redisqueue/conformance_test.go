package redisqueue_test

import (
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/queuetest"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// The suite's real-time lease and the dedup window it waits out once.
const (
	suiteLease  = 500 * time.Millisecond
	suiteWindow = 500 * time.Millisecond
)

func TestConformance(t *testing.T) {
	client := newClient(t)
	ns := namespace(t)
	queuetest.Run(t, func(t *testing.T, _ *clock.Fake) queue.Backend {
		return newBackend(t, client, ns, func(o *redisqueue.Options) { o.DedupWindow = suiteWindow })
	}, queuetest.Options{RealTime: true, Lease: suiteLease, DedupWindow: suiteWindow})
}

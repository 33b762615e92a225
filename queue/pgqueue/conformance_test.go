package pgqueue_test

import (
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
	"github.com/switchboard-go/switchboard/queue/queuetest"
)

// The conformance suite against the real engine: one namespace for the
// run, a backend per subtest (the suite names each queue at random).
func TestConformance(t *testing.T) {
	db := newPool(t, postgresURL(t))
	ns := migrate(t, db)
	const lease, window = 500 * time.Millisecond, time.Second
	queuetest.Run(t, func(t *testing.T, _ *clock.Fake) queue.Backend {
		b, err := pgqueue.New(t.Context(), db, pgqueue.Config{Namespace: ns, DedupWindow: window})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, queuetest.Options{RealTime: true, Lease: lease, DedupWindow: window})
}

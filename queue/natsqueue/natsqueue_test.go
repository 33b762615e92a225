package natsqueue_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
	"github.com/switchboard-go/switchboard/queue/queuetest"
)

// connect opens a client to url, closed when t ends. Reconnects are quick
// and unbounded, as a service's would be.
func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0), nats.Timeout(time.Second))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// namespace returns a namespace no other test uses, and deletes its
// streams and buckets when t ends (after the backends on it are closed).
func namespace(t testing.TB, nc *nats.Conn) string {
	t.Helper()
	ns := "sbq_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() { dropNamespace(nc, ns) })
	return ns
}

func dropNamespace(nc *nats.Conn, ns string) {
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range []string{"_work", "_delay", "_dead"} {
		_ = js.DeleteStream(ctx, ns+s)
	}
	for _, b := range []string{"_ctl", "_err"} {
		_ = js.DeleteKeyValue(ctx, ns+b)
	}
}

func open(t testing.TB, nc *nats.Conn, opts *natsqueue.Options) *natsqueue.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := natsqueue.New(ctx, nc, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	url := enginetest.NATSURL(t)
	nc := connect(t, url)
	ns := namespace(t, nc)
	queuetest.Run(t, func(t *testing.T, _ *clock.Fake) queue.Backend {
		return open(t, connect(t, url), &natsqueue.Options{Namespace: ns, DedupWindow: time.Second})
	}, queuetest.Options{RealTime: true, Lease: 300 * time.Millisecond, DedupWindow: 1500 * time.Millisecond})
}

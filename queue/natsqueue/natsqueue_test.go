package natsqueue_test

import (
	"context"
	"crypto/rand"
	"strconv"
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

// testMaxBytes bounds the tests' streams: JetStream 2.9 reserves a file
// stream's MaxBytes from the server's store when it creates the stream,
// and the default (8 GiB for each of two streams) lets few namespaces fit
// on a server that other test runs share.
const testMaxBytes = 256 << 20

func open(t testing.TB, nc *nats.Conn, opts *natsqueue.Options) *natsqueue.Backend {
	t.Helper()
	if opts == nil {
		opts = &natsqueue.Options{}
	}
	if opts.MaxBytes == 0 {
		o := *opts
		o.MaxBytes = testMaxBytes
		opts = &o
	}
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

// A backend goes by the priority levels it last read from the stream and
// those it has published to itself; when they hold nothing visible, it
// reads the stream again before it reports the queue empty. So a message
// another backend put on a level this one has never seen is received at
// once, however long Recheck is.
func TestReceiveFindsAnotherBackendsLevel(t *testing.T) {
	url := enginetest.NATSURL(t)
	nc := connect(t, url)
	opts := &natsqueue.Options{Namespace: namespace(t, nc), Recheck: time.Hour}
	consumer, err := queue.New(open(t, nc, opts), "jobs")
	require.NoError(t, err)
	producer, err := queue.New(open(t, connect(t, url), opts), "jobs")
	require.NoError(t, err)
	ctx := t.Context()

	_, err = consumer.Enqueue(ctx, queue.Message{Body: []byte("low")})
	require.NoError(t, err)
	ds, err := consumer.Receive(ctx, queue.ReceiveOptions{})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.NoError(t, consumer.Ack(ctx, ds[0].Receipt))

	_, err = producer.Enqueue(ctx, queue.Message{Body: []byte("high"), Priority: 7})
	require.NoError(t, err)
	ds, err = consumer.Receive(ctx, queue.ReceiveOptions{Max: 5})
	require.NoError(t, err)
	require.Len(t, ds, 1, "got %v", ds)
	require.Equal(t, "high", string(ds[0].Body))
	require.Equal(t, 7, ds[0].Priority)
	require.Equal(t, 1, ds[0].Attempt)
}

// Pull inboxes are reused from one pull to the next: a waiting receive
// that ends empty (the server's timeout status) and one that finds nothing
// at once leave nothing behind that a later receive could take for its
// own answer, or that could lease a message to nobody.
func TestReceiveAfterEmptyPulls(t *testing.T) {
	url := enginetest.NATSURL(t)
	nc := connect(t, url)
	q, err := queue.New(open(t, nc, &natsqueue.Options{Namespace: namespace(t, nc)}), "jobs")
	require.NoError(t, err)
	ctx := t.Context()
	for i := range 10 {
		ds, err := q.Receive(ctx, queue.ReceiveOptions{Wait: 10 * time.Millisecond})
		require.NoError(t, err)
		require.Empty(t, ds)
		ds, err = q.Receive(ctx, queue.ReceiveOptions{Max: 3})
		require.NoError(t, err)
		require.Empty(t, ds)

		body := "m" + strconv.Itoa(i)
		_, err = q.Enqueue(ctx, queue.Message{Body: []byte(body)})
		require.NoError(t, err)
		ds, err = q.Receive(ctx, queue.ReceiveOptions{Max: 3})
		require.NoError(t, err)
		require.Len(t, ds, 1, "round %d", i)
		require.Equal(t, body, string(ds[0].Body))
		require.Equal(t, 1, ds[0].Attempt)
		require.NoError(t, q.Ack(ctx, ds[0].Receipt))
	}
}

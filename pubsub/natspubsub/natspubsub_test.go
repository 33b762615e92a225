package natspubsub_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/internal/faultproxy"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/natspubsub"
	"github.com/switchboard-go/switchboard/pubsub/pubsubtest"
)

// connect opens a client to url, closed when t ends. Reconnects are quick
// and unbounded, as a node's would be.
func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0), nats.Timeout(time.Second))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// namespace returns a namespace no other test uses, and deletes its stream
// when t ends (after the brokers on it are closed).
func namespace(t testing.TB, nc *nats.Conn) string {
	t.Helper()
	ns := "sbtest_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, ns)
	})
	return ns
}

func open(t testing.TB, nc *nats.Conn, opts *natspubsub.Options) *natspubsub.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := natspubsub.New(ctx, nc, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	url := enginetest.NATSURL(t)
	pubsubtest.RunWith(t, pubsubtest.Options{
		NewBackend: func(t *testing.T) pubsub.Backend {
			nc := connect(t, url)
			return open(t, nc, &natspubsub.Options{Namespace: namespace(t, nc)})
		},
		NewSmallHistory: func(t *testing.T, n int) pubsub.Backend {
			nc := connect(t, url)
			return open(t, nc, &natspubsub.Options{Namespace: namespace(t, nc), MaxMsgs: int64(n)})
		},
		FeedBlocks: true,
	})
}

// Two nodes, each with its own connection, on one namespace.
func TestAcrossNodes(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	ncA, ncB := connect(t, url), connect(t, url)
	ns := namespace(t, ncA)
	a := open(t, ncA, &natspubsub.Options{Namespace: ns})
	b := open(t, ncB, &natspubsub.Options{Namespace: ns})

	wild, err := b.Subscribe(ctx, "orders.>")
	require.NoError(t, err)
	defer wild.Close()
	exact, err := b.Subscribe(ctx, "orders.eu")
	require.NoError(t, err)
	defer exact.Close()

	c1, err := a.Publish(ctx, pubsub.Message{Topic: "orders.eu", Data: []byte("1"), Header: map[string]string{"k": "v"}})
	require.NoError(t, err)
	c2, err := a.Publish(ctx, pubsub.Message{Topic: "orders.us.west", Data: []byte("2")})
	require.NoError(t, err)

	for _, want := range []struct {
		data   string
		cursor pubsub.Cursor
		topic  string
	}{{"1", c1, "orders.eu"}, {"2", c2, "orders.us.west"}} {
		m, err := wild.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, want.data, string(m.Data))
		assert.Equal(t, want.topic, m.Topic)
		assert.Equal(t, want.cursor, m.Cursor, "node b's cursor vs the one node a's Publish returned")
		assert.NotEmpty(t, m.ID)
		assert.False(t, m.Time.IsZero())
	}
	m, err := exact.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "1", string(m.Data))
	assert.Equal(t, map[string]string{"k": "v"}, m.Header)

	// A client that read "1" on node b reconnects to node a, with a
	// wildcard, and replays from node b's cursor.
	resumed, err := a.Subscribe(ctx, "orders.*.*", pubsub.After(m.Cursor))
	require.NoError(t, err)
	defer resumed.Close()
	_, err = b.Publish(ctx, pubsub.Message{Topic: "orders.eu.north", Data: []byte("3")})
	require.NoError(t, err)
	for _, want := range []string{"2", "3"} {
		m, err := resumed.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, string(m.Data))
	}
}

// streamConsumers counts the consumers of b's stream, engine-side.
func streamConsumers(t *testing.T, js jetstream.JetStream, stream string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	return info.State.Consumers
}

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

// Ten thousand local subscribers of one topic cost one connection and one
// consumer on the server.
func TestOneEngineSubscriptionPerNode(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	admin := connect(t, url)
	js, err := jetstream.New(admin)
	require.NoError(t, err)
	proxy := proxyTo(t, url)
	nc := connect(t, "nats://"+proxy.Addr())
	b := open(t, nc, &natspubsub.Options{Namespace: namespace(t, admin)})

	const n = 10_000
	subs := make([]pubsub.Subscription, 0, n)
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()
	for len(subs) < n {
		s, err := b.Subscribe(ctx, "news.today")
		require.NoError(t, err)
		subs = append(subs, s)
		switch len(subs) {
		case 1:
			// The feed starts in the background: wait for its consumer.
			require.Eventually(t, func() bool { return streamConsumers(t, js, b.Stream()) == 1 }, 10*time.Second, 10*time.Millisecond)
			assert.Equal(t, 1, proxy.Accepted(), "connections the node opened, with 1 subscriber")
		case n:
			assert.Equal(t, 1, proxy.Accepted(), "connections the node opened, with %d subscribers", n)
			assert.Equal(t, 1, streamConsumers(t, js, b.Stream()), "engine consumers, with %d subscribers", n)
		}
	}
	c, err := b.Publish(ctx, pubsub.Message{Topic: "news.today", Data: []byte("hello")})
	require.NoError(t, err)
	for k, s := range subs {
		m, err := s.Next(ctx)
		require.NoError(t, err, "subscriber %d", k)
		require.Equal(t, c, m.Cursor, "subscriber %d", k)
	}
	assert.Equal(t, n, b.Stats().Subscribers)
}

// collect reads until it has n messages, recording a gap signal and
// checking that, between gap signals, messages come in order without a
// hole: never a silent hole.
// prev is the message before the first one expected, -1 for any.
func collect(t *testing.T, ctx context.Context, sub pubsub.Subscription, prev, n int) (got []int, gaps int) {
	t.Helper()
	for len(got) < n {
		m, err := sub.Next(ctx)
		if errors.Is(err, pubsub.ErrGap) {
			gaps++
			prev = -1
			continue
		}
		require.NoError(t, err, "after %d messages", len(got))
		i, err := strconv.Atoi(string(m.Data))
		require.NoError(t, err)
		if prev >= 0 {
			require.Equal(t, prev+1, i, "message after %d without a gap signal", prev)
		}
		prev = i
		got = append(got, i)
	}
	return got, gaps
}

// The subscriber's connection is cut, repeatedly, while another node keeps
// publishing: it receives every message, in order.
func TestFeedSurvivesCuts(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	direct := connect(t, url)
	ns := namespace(t, direct)
	proxy := proxyTo(t, url)
	pub := open(t, direct, &natspubsub.Options{Namespace: ns})
	sub := open(t, connect(t, "nats://"+proxy.Addr()), &natspubsub.Options{Namespace: ns, Heartbeat: 200 * time.Millisecond})

	s, err := sub.Subscribe(ctx, "t", pubsub.Buffer(10_000))
	require.NoError(t, err)
	defer s.Close()

	const n = 2000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= n; i++ {
			if _, err := pub.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte(strconv.Itoa(i))}); err != nil {
				t.Errorf("Publish %d: %v", i, err)
				return
			}
			if i%(n/5) == 0 {
				proxy.Cut()
			}
		}
	})
	got, gaps := collect(t, ctx, s, 0, n)
	wg.Wait()
	assert.Zero(t, gaps, "nothing was trimmed, so no gap")
	assert.Len(t, got, n)
	assert.GreaterOrEqual(t, proxy.Accepted(), 2, "the connection was cut and re-established")
}

// While the engine is unreachable, Publish fails instead of reporting a
// message as stored.
func TestPublishDuringOutageFails(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	admin := connect(t, url)
	proxy := proxyTo(t, url)
	nc := connect(t, "nats://"+proxy.Addr())
	b := open(t, nc, &natspubsub.Options{Namespace: namespace(t, admin)})

	proxy.Pause()
	require.Eventually(t, func() bool { return !nc.IsConnected() }, 10*time.Second, 5*time.Millisecond)
	_, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("x")})
	require.ErrorIs(t, err, natspubsub.ErrUnavailable)

	proxy.Resume()
	require.Eventually(t, nc.IsConnected, 10*time.Second, 5*time.Millisecond)
	c, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("y")})
	require.NoError(t, err)
	s, err := b.Subscribe(ctx, "t", pubsub.FromOldest())
	require.NoError(t, err)
	defer s.Close()
	m, err := s.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "y", string(m.Data), "only the acknowledged message is in the stream")
	assert.Equal(t, c, m.Cursor)
}

// What the feed missed while cut off was trimmed before it came back: its
// subscribers are told with ErrGap, then continue with what is retained.
func TestTrimmedWhileCutReportsGap(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	direct := connect(t, url)
	ns := namespace(t, direct)
	proxy := proxyTo(t, url)
	pub := open(t, direct, &natspubsub.Options{Namespace: ns, MaxMsgs: 5})
	nc := connect(t, "nats://"+proxy.Addr())
	sub := open(t, nc, &natspubsub.Options{Namespace: ns, MaxMsgs: 5, Heartbeat: 200 * time.Millisecond})

	s, err := sub.Subscribe(ctx, "t")
	require.NoError(t, err)
	defer s.Close()
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			_, err := pub.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte(strconv.Itoa(i))})
			require.NoError(t, err)
		}
	}
	publish(1, 1)
	m, err := s.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "1", string(m.Data))

	proxy.Pause()
	require.Eventually(t, func() bool { return !nc.IsConnected() }, 10*time.Second, 5*time.Millisecond)
	publish(2, 20) // the stream keeps 16..20
	proxy.Resume()

	_, err = s.Next(ctx)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "trimmed", gap.Reason)
	got, gaps := collect(t, ctx, s, -1, 5)
	assert.Zero(t, gaps)
	assert.Equal(t, []int{16, 17, 18, 19, 20}, got)
}

// A stream deleted and created again is a new history: a new epoch, a gap
// for the subscribers, and old cursors are recognised as foreign.
func TestRecreatedStreamIsANewEpoch(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	nc := connect(t, url)
	ns := namespace(t, nc)
	b := open(t, nc, &natspubsub.Options{Namespace: ns, Heartbeat: 200 * time.Millisecond})
	s, err := b.Subscribe(ctx, "t")
	require.NoError(t, err)
	defer s.Close()
	old, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("old")})
	require.NoError(t, err)
	_, err = s.Next(ctx)
	require.NoError(t, err)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(ctx, b.Stream()))

	// The feed notices, creates the stream again and reports the loss.
	_, err = s.Next(ctx)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "stream recreated", gap.Reason)

	c, err := b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("new")})
	require.NoError(t, err)
	m, err := s.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "new", string(m.Data))
	assert.Equal(t, c, m.Cursor)
	oldEpoch, _, _ := old.Parse()
	newEpoch, _, _ := c.Parse()
	assert.NotEqual(t, oldEpoch, newEpoch)

	resumed, err := b.Subscribe(ctx, "t", pubsub.After(old))
	require.NoError(t, err)
	defer resumed.Close()
	_, err = resumed.Next(ctx)
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "epoch", gap.Reason)
	m, err = resumed.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "new", string(m.Data))
}

func TestCloseReleasesEverything(t *testing.T) {
	url := enginetest.NATSURL(t)
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // last, after every connection is closed
	ctx := testCtx(t)
	admin := connect(t, url)
	js, err := jetstream.New(admin)
	require.NoError(t, err)
	ns := namespace(t, admin)

	nc, err := nats.Connect(url)
	require.NoError(t, err)
	b, err := natspubsub.New(ctx, nc, &natspubsub.Options{Namespace: ns})
	require.NoError(t, err)
	s, err := b.Subscribe(ctx, "t", pubsub.FromOldest())
	require.NoError(t, err)
	_, err = b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("x")})
	require.NoError(t, err)
	_, err = s.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, streamConsumers(t, js, b.Stream()))

	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "second Close")
	_, err = s.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	_, err = b.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("y")})
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	_, err = b.Subscribe(ctx, "t")
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	assert.True(t, nc.IsConnected(), "Close leaves the caller's connection open")
	assert.Equal(t, 0, streamConsumers(t, js, b.Stream()), "the feed's consumer is deleted")

	nc.Close()
}

// When the caller's connection closes for good, the broker's
// subscriptions end instead of waiting forever.
func TestClosedConnectionEndsSubscriptions(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	admin := connect(t, url)
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	b := open(t, nc, &natspubsub.Options{Namespace: namespace(t, admin)})
	s, err := b.Subscribe(ctx, "t")
	require.NoError(t, err)
	defer s.Close()
	nc.Close()
	_, err = s.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrClosed)
}

func TestHeadersRoundTrip(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	nc := connect(t, url)
	b := open(t, nc, &natspubsub.Options{Namespace: namespace(t, nc)})
	for _, h := range []map[string]string{
		{"content-type": "text/plain", "Trace-Id": "abc", "empty": "", "trailing": "x  "},
		{"with space": "v"},
		{"k": "line1\r\nline2"},
		{"k": "  leading"},
		{"Nats-Expected-Stream": "nope", "ok": "1"},
		{"Switchboard-Header": "mine", "ünïcode": "\x00\xff"},
	} {
		t.Run(fmt.Sprint(h), func(t *testing.T) {
			c, err := b.Publish(ctx, pubsub.Message{Topic: "h", Data: []byte("x"), Header: h})
			require.NoError(t, err)
			s, err := b.Subscribe(ctx, "h", pubsub.FromOldest())
			require.NoError(t, err)
			defer s.Close()
			for {
				m, err := s.Next(ctx)
				require.NoError(t, err)
				if m.Cursor == c {
					assert.Equal(t, h, m.Header)
					return
				}
			}
		})
	}
}

// Publishing again with the same ID, as after a Publish that failed with a
// lost acknowledgement, stores the message once.
func TestRetriedPublishIsStoredOnce(t *testing.T) {
	url := enginetest.NATSURL(t)
	ctx := testCtx(t)
	nc := connect(t, url)
	b := open(t, nc, &natspubsub.Options{Namespace: namespace(t, nc)})
	m := pubsub.Message{Topic: "t", Data: []byte("x"), ID: "order-1"}
	c1, err := b.Publish(ctx, m)
	require.NoError(t, err)
	c2, err := b.Publish(ctx, m)
	require.NoError(t, err)
	assert.Equal(t, c1, c2)
}

func TestOptionsAreValidated(t *testing.T) {
	url := enginetest.NATSURL(t)
	nc := connect(t, url)
	for _, ns := range []string{"a..b", "a.*", "a b", ".a"} {
		_, err := natspubsub.New(t.Context(), nc, &natspubsub.Options{Namespace: ns})
		assert.Error(t, err, "namespace %q", ns)
	}
}

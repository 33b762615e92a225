package redispubsub_test

import (
	"context"
	"crypto/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/internal/faultproxy"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/redispubsub"
)

// redisOptions returns the options of a client of the test engine.
func redisOptions(t testing.TB) *redis.Options {
	t.Helper()
	opt, err := redis.ParseURL(enginetest.RedisURL(t))
	require.NoError(t, err)
	return opt
}

// newClient returns a client of the test engine (a "node"), closed when t
// ends.
func newClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(redisOptions(t))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newProxied returns a proxy to the test engine and a client through it,
// both closed when t ends. The client does not retry on its own, so that a
// cut shows at once; name, if given, is its CLIENT SETNAME.
func newProxied(t testing.TB, name ...string) (*faultproxy.Proxy, *redis.Client) {
	t.Helper()
	opt := redisOptions(t)
	host := opt.Addr
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "6379")
	}
	p, err := faultproxy.New(host)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	opt.Addr = p.Addr()
	opt.MaxRetries = -1
	if len(name) > 0 {
		opt.ClientName = name[0] // the broker's feed connection takes it too
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return p, c
}

// namespace returns a namespace of its own for t, whose keys are deleted
// when t ends (through cleanup, which is a client of its own).
func namespace(t testing.TB) string {
	t.Helper()
	ns := "redispubsub-test-" + strings.ToLower(rand.Text()[:12])
	cleanup := newClient(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cleanup.Del(ctx, "{"+ns+"}:stream", "{"+ns+"}:epoch").Err()
	})
	return ns
}

// newBroker returns a broker on client in namespace ns, closed when t ends.
func newBroker(t testing.TB, client *redis.Client, ns string, opts ...redispubsub.Option) *redispubsub.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redispubsub.New(ctx, client, append([]redispubsub.Option{
		redispubsub.Namespace(ns),
		redispubsub.ReconnectBackoff(5*time.Millisecond, 100*time.Millisecond),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func topicPrefix() string { return "t" + strings.ToLower(rand.Text()[:10]) }

func publishN(t testing.TB, ctx context.Context, b pubsub.Publisher, topic string, from, to int) []pubsub.Cursor {
	t.Helper()
	var cs []pubsub.Cursor
	for i := from; i <= to; i++ {
		c, err := b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte(strconv.Itoa(i))})
		require.NoError(t, err)
		cs = append(cs, c)
	}
	return cs
}

func index(m pubsub.Message) int {
	i, err := strconv.Atoi(string(m.Data))
	if err != nil {
		return -1
	}
	return i
}

func expect(t testing.TB, ctx context.Context, sub pubsub.Subscription, from, to int) []pubsub.Message {
	t.Helper()
	var got []pubsub.Message
	for i := from; i <= to; i++ {
		m, err := sub.Next(ctx)
		require.NoError(t, err, "waiting for message %d", i)
		require.Equal(t, i, index(m), "message received (got) vs next published (want)")
		got = append(got, m)
	}
	return got
}

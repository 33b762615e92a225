package redisqueue_test

import (
	"context"
	"crypto/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/internal/faultproxy"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// redisOptions returns the options of a client of the test engine.
func redisOptions(t testing.TB) *redis.Options {
	t.Helper()
	opt, err := redis.ParseURL(enginetest.RedisURL(t))
	require.NoError(t, err)
	return opt
}

// newClient returns a client of the test engine, closed when t ends.
func newClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(redisOptions(t))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// namespace returns a namespace of its own for t, whose keys are deleted
// when t ends.
func namespace(t testing.TB) string {
	t.Helper()
	ns := "redisqueue-test-" + strings.ToLower(rand.Text()[:12])
	cleanup := newClient(t)
	t.Cleanup(func() { dropNamespace(t, cleanup, ns) })
	return ns
}

// keysOf lists the keys of namespace ns.
func keysOf(t testing.TB, c *redis.Client, ns string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	iter := c.Scan(ctx, 0, "{"+ns+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	require.NoError(t, iter.Err())
	return keys
}

func dropNamespace(t testing.TB, c *redis.Client, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if keys := keysOf(t, c, ns); len(keys) > 0 {
		_ = c.Del(ctx, keys...).Err()
	}
}

// newBackend returns a backend on client in namespace ns, closed when t
// ends.
func newBackend(t testing.TB, client *redis.Client, ns string, opts ...func(*redisqueue.Options)) *redisqueue.Backend {
	t.Helper()
	o := redisqueue.Options{Namespace: ns, ReconnectBase: 5 * time.Millisecond, ReconnectMax: 100 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	b, err := redisqueue.New(client, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// newProxied returns a proxy to the test engine and a client through it,
// both closed when t ends. The client does not retry on its own, so that a
// cut shows at once.
func newProxied(t testing.TB) (*faultproxy.Proxy, *redis.Client) {
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
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return p, c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

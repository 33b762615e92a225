package pgqueue_test

import (
	"context"
	"crypto/rand"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/internal/faultproxy"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

func postgresURL(t testing.TB) string { return enginetest.PostgresURL(t) }

// newPool opens a pool on the test database, closed when t ends.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 8
	db, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

// migrate creates a namespace of its own for t and drops it when t ends.
func migrate(t testing.TB, db *pgxpool.Pool) string {
	t.Helper()
	ns := "pgqueue_test_" + strings.ToLower(rand.Text()[:12])
	require.NoError(t, pgqueue.Migrate(context.Background(), db, ns))
	t.Cleanup(func() { _ = pgqueue.DropNamespace(context.Background(), db, ns) })
	return ns
}

// open returns a backend closed when t ends.
func open(t testing.TB, db *pgxpool.Pool, cfg pgqueue.Config) *pgqueue.Backend {
	t.Helper()
	b, err := pgqueue.New(context.Background(), db, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// proxied returns a proxy to the test database and the URL through it.
func proxied(t testing.TB, dbURL string) (*faultproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	p, err := faultproxy.New(host)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	return p, u.String()
}

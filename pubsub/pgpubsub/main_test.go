package pgpubsub_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newPool opens a pool on the test database, closed when t ends.
func newPool(t testing.TB, url string, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 4
	for _, f := range configure {
		f(cfg)
	}
	db, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

// migrate creates a namespace of its own for t and drops it when t ends.
func migrate(t testing.TB, db *pgxpool.Pool, s pgpubsub.Schema) string {
	t.Helper()
	s.Namespace = "pgpubsub_test_" + strings.ToLower(rand.Text()[:12])
	require.NoError(t, pgpubsub.Migrate(context.Background(), db, s))
	t.Cleanup(func() {
		_ = pgpubsub.DropNamespace(context.Background(), db, s.Namespace)
	})
	return s.Namespace
}

// open returns a broker that the caller closes.
func open(t testing.TB, db *pgxpool.Pool, cfg pgpubsub.Config) *pgpubsub.Broker {
	t.Helper()
	b, err := pgpubsub.New(context.Background(), db, cfg)
	require.NoError(t, err)
	return b
}

// openT returns a broker closed when t ends.
func openT(t testing.TB, db *pgxpool.Pool, cfg pgpubsub.Config) *pgpubsub.Broker {
	t.Helper()
	b := open(t, db, cfg)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func postgresURL(t testing.TB) string { return enginetest.PostgresURL(t) }

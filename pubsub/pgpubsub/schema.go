package pgpubsub

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/internal/pgname"
)

// Defaults of Schema.
const (
	// DefaultNamespace is the PostgreSQL schema used when none is given.
	DefaultNamespace = "switchboard_pubsub"
	// DefaultMaxMessages is the count bound of retained history.
	DefaultMaxMessages = 100_000
	// DefaultMaxAge is the age bound of retained history.
	DefaultMaxAge = 24 * time.Hour
)

// ErrNotMigrated: the namespace has no pubsub schema; call Migrate.
var ErrNotMigrated = errors.New("pgpubsub: namespace not migrated (call Migrate)")

// Schema describes one namespace: a PostgreSQL schema holding the messages
// table, the metadata row and the publish function. Its retention settings
// live in the database, so every node applies the same ones.
type Schema struct {
	// Namespace is the PostgreSQL schema name: lower-case letters, digits
	// and '_', starting with a letter or '_', at most 48 bytes. Empty means
	// DefaultNamespace.
	Namespace string
	// MaxMessages bounds retained history by count: the namespace keeps
	// its newest MaxMessages messages (all topics together). Zero or
	// negative means DefaultMaxMessages.
	MaxMessages int64
	// MaxAge bounds retained history by age: the cleanup deletes messages
	// older than this. Zero means DefaultMaxAge; negative means no age
	// bound.
	MaxAge time.Duration
}

// names are the SQL identifiers of one namespace, quoted.
type names struct {
	ns      string // the namespace, unquoted
	schema  string // quoted schema
	channel string // the NOTIFY channel, unquoted (pg_notify's argument)
	listen  string // LISTEN statement
	lockKey int64  // the publish lock (pg_advisory_xact_lock)
	trimKey int64  // the cleanup lock
}

func namesFor(ns string) (names, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	if !pgname.ValidNamespace(ns) {
		return names{}, fmt.Errorf("pgpubsub: invalid namespace %q: want [a-z_][a-z0-9_]*, at most 48 bytes", ns)
	}
	channel := ns + "_pubsub"
	return names{
		ns:      ns,
		schema:  pgx.Identifier{ns}.Sanitize(),
		channel: channel,
		listen:  "LISTEN " + pgx.Identifier{channel}.Sanitize(),
		lockKey: pgname.LockKey("switchboard.pubsub.publish." + ns),
		trimKey: pgname.LockKey("switchboard.pubsub.cleanup." + ns),
	}, nil
}

// migrateKey serializes concurrent Migrate calls of every namespace: CREATE
// ... IF NOT EXISTS is not safe against itself.
var migrateKey = pgname.LockKey("switchboard.pubsub.migrate")

// Migrate creates the namespace's schema if it does not exist and sets its
// retention. It is idempotent and safe to call from many nodes at once; it
// never drops data. A new namespace gets a new random epoch, so cursors
// minted before a namespace was dropped and created again are reported as
// a gap ("epoch") instead of being misread.
func Migrate(ctx context.Context, db *pgxpool.Pool, s Schema) error {
	n, err := namesFor(s.Namespace)
	if err != nil {
		return err
	}
	maxMessages := s.MaxMessages
	if maxMessages <= 0 {
		maxMessages = DefaultMaxMessages
	}
	var maxAge int64 // microseconds; 0 = no bound
	switch {
	case s.MaxAge == 0:
		maxAge = DefaultMaxAge.Microseconds()
	case s.MaxAge > 0:
		maxAge = max(s.MaxAge.Microseconds(), 1)
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, n.ddl()); err != nil {
			return fmt.Errorf("pgpubsub: migrating %q: %w", n.ns, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+n.schema+`.meta (epoch, max_messages, max_age_us) VALUES ($1, $2, $3)
			ON CONFLICT (singleton) DO UPDATE SET max_messages = EXCLUDED.max_messages, max_age_us = EXCLUDED.max_age_us`,
			newEpoch(), maxMessages, maxAge)
		return err
	})
}

// DropNamespace deletes the namespace and everything in it. Brokers on it
// fail until it is migrated again, and then report a gap ("epoch").
func DropNamespace(ctx context.Context, db *pgxpool.Pool, namespace string) error {
	n, err := namesFor(namespace)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, "DROP SCHEMA IF EXISTS "+n.schema+" CASCADE")
	return err
}

// ddl is the schema. The publish function takes a transaction-scoped
// advisory lock before the INSERT draws its position: publishers of a
// namespace commit one at a time, so positions become visible in their
// order, and a reader that has seen position p has seen every position
// before p that will ever commit (see the package documentation).
func (n names) ddl() string {
	r := strings.NewReplacer("$S", n.schema, "$CHANNEL", quoteLiteral(n.channel), "$LOCK", fmt.Sprint(n.lockKey))
	return r.Replace(`
CREATE SCHEMA IF NOT EXISTS $S;
CREATE TABLE IF NOT EXISTS $S.messages (
	pos          bigserial PRIMARY KEY,
	topic        text NOT NULL,
	msg_id       text NOT NULL,
	published_at timestamptz NOT NULL,
	header       jsonb,
	data         bytea
);
CREATE INDEX IF NOT EXISTS messages_topic_pos ON $S.messages (topic, pos);
CREATE TABLE IF NOT EXISTS $S.meta (
	singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	epoch        text NOT NULL,
	trimmed      bigint NOT NULL DEFAULT 0,
	max_messages bigint NOT NULL,
	max_age_us   bigint NOT NULL
);
CREATE OR REPLACE FUNCTION $S.publish(p_topic text, p_id text, p_at timestamptz, p_header jsonb, p_data bytea, p_payload text,
	OUT pos bigint, OUT epoch text)
LANGUAGE plpgsql AS $fn$
BEGIN
	PERFORM pg_advisory_xact_lock($LOCK);
	INSERT INTO $S.messages AS m (topic, msg_id, published_at, header, data)
		VALUES (p_topic, p_id, p_at, p_header, p_data) RETURNING m.pos INTO pos;
	SELECT meta.epoch INTO epoch FROM $S.meta;
	PERFORM pg_notify($CHANNEL, pos::text || ' ' || epoch || coalesce(' ' || p_payload, ''));
END
$fn$;
`)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// newEpoch returns 8 random base32 characters (40 bits).
func newEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").EncodeToString(b[:])
}

// notMigrated turns "relation does not exist" into ErrNotMigrated.
func notMigrated(ns string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000" || pgErr.Code == "42883") {
		return fmt.Errorf("%w: %q: %v", ErrNotMigrated, ns, err)
	}
	return err
}

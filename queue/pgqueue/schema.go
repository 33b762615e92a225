package pgqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/internal/pgname"
)

// DefaultNamespace is the PostgreSQL schema used when none is given.
const DefaultNamespace = "switchboard_queue"

// ErrNotMigrated: the namespace has no queue schema; call Migrate.
var ErrNotMigrated = errors.New("pgqueue: namespace not migrated (call Migrate)")

// A job's state, in the state column (smallint):
//
//	0 ready    visible now
//	1 waiting  delayed, or nacked with a delay: visible at visible_at
//	2 leased   with a consumer until visible_at
//	3 dead     in the dead-letter queue since finished_at
//	4 done     acked at finished_at, kept for Config.Retention

// names are the SQL identifiers of one namespace.
type names struct {
	ns       string // the namespace, unquoted
	schema   string // quoted schema
	channel  string // the NOTIFY channel, unquoted (pg_notify's argument)
	listen   string // LISTEN statement
	cleanKey int64  // the cleanup's advisory lock
}

func namesFor(ns string) (names, error) {
	if ns == "" {
		ns = DefaultNamespace
	}
	if !pgname.ValidNamespace(ns) {
		return names{}, fmt.Errorf("pgqueue: invalid namespace %q: want [a-z_][a-z0-9_]*, at most 48 bytes", ns)
	}
	channel := ns + "_queue"
	return names{
		ns:       ns,
		schema:   pgx.Identifier{ns}.Sanitize(),
		channel:  channel,
		listen:   "LISTEN " + pgx.Identifier{channel}.Sanitize(),
		cleanKey: pgname.LockKey("switchboard.queue.cleanup." + ns),
	}, nil
}

// migrateKey serializes concurrent Migrate calls: CREATE ... IF NOT EXISTS
// is not safe against itself.
var migrateKey = pgname.LockKey("switchboard.queue.migrate")

// Migrate creates the namespace (a PostgreSQL schema with the jobs table,
// its indexes and the enqueue function) if it does not exist, and brings an
// existing one up to date. It is idempotent, safe to call from many nodes
// at once, and never drops data. Call it explicitly, at deploy or start-up:
// New does not.
func Migrate(ctx context.Context, db *pgxpool.Pool, namespace string) error {
	n, err := namesFor(namespace)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, n.ddl()); err != nil {
			return fmt.Errorf("pgqueue: migrating %q: %w", n.ns, err)
		}
		return nil
	})
}

// DropNamespace deletes the namespace and every message in it. Backends on
// it fail with ErrNotMigrated until it is migrated again.
func DropNamespace(ctx context.Context, db *pgxpool.Pool, namespace string) error {
	n, err := namesFor(namespace)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, "DROP SCHEMA IF EXISTS "+n.schema+" CASCADE")
	return err
}

// ddl is the schema. One table holds every job of every queue of the
// namespace; a job's state says which partial index holds it, so that each
// hot query reads only the rows it wants however many the table has:
//
//   - jobs_ready (queue, priority DESC, seq) WHERE state = ready: Receive
//     reads the head of this index and nothing else.
//   - jobs_timed (queue, visible_at) WHERE state IN (waiting, leased): the
//     rows that become visible at a time (delays, nacks, leases); Receive
//     moves the due ones to ready, and a waiting Receive reads the next
//     due time from it.
//   - jobs_dead (queue, finished_at, id) WHERE state = dead: ListDead.
//   - jobs_finished (finished_at) WHERE state >= dead: the cleanup.
//
// seq orders a priority first in, first out; it is the id at enqueue and a
// new value at redrive (which puts a message at the back). The enqueue
// function draws ids, applies deduplication and notifies in one statement.
func (n names) ddl() string {
	r := strings.NewReplacer("$S", n.schema, "$CHANNEL", quoteLiteral(n.channel))
	return r.Replace(`
CREATE SCHEMA IF NOT EXISTS $S;
CREATE TABLE IF NOT EXISTS $S.jobs (
	id          bigserial PRIMARY KEY,
	queue       text NOT NULL,
	state       smallint NOT NULL,
	priority    smallint NOT NULL DEFAULT 0,
	seq         bigint NOT NULL,
	visible_at  timestamptz NOT NULL,
	attempts    integer NOT NULL DEFAULT 0,
	token       bigint NOT NULL DEFAULT 0,
	enqueued_at timestamptz NOT NULL,
	queued_at   timestamptz NOT NULL,
	finished_at timestamptz,
	last_error  text,
	header      jsonb,
	body        bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON $S.jobs (queue, priority DESC, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS jobs_timed ON $S.jobs (queue, visible_at) WHERE state IN (1, 2);
CREATE INDEX IF NOT EXISTS jobs_dead ON $S.jobs (queue, finished_at, id) WHERE state = 3;
CREATE INDEX IF NOT EXISTS jobs_finished ON $S.jobs (finished_at) WHERE state >= 3;
-- A queue table churns: vacuum it early so that dead index entries do not
-- pile up at the head of jobs_ready.
ALTER TABLE $S.jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 1);

CREATE TABLE IF NOT EXISTS $S.dedup (
	queue      text NOT NULL,
	key        text NOT NULL,
	job_id     bigint NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (queue, key)
);
CREATE INDEX IF NOT EXISTS dedup_expires ON $S.dedup (expires_at);

CREATE TABLE IF NOT EXISTS $S.queues (
	name   text PRIMARY KEY,
	paused boolean NOT NULL DEFAULT false
);

-- Outcome counters, spread over shards so that concurrent acks of one
-- queue do not queue up on one row.
CREATE TABLE IF NOT EXISTS $S.counters (
	queue     text NOT NULL,
	shard     smallint NOT NULL,
	processed bigint NOT NULL DEFAULT 0,
	failed    bigint NOT NULL DEFAULT 0,
	retried   bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (queue, shard)
);

-- enqueue stores a batch for one queue and returns, per message (ord from
-- 1), its id and whether it was dropped as a duplicate. A message is
-- visible at p_run_at (or at once when that has passed) if given, else
-- after p_delay_us. A dedup key is kept for p_window_us after the first
-- message that carried it; a later message with the key within the window
-- (this batch included) is a duplicate of the first.
CREATE OR REPLACE FUNCTION $S.enqueue(p_queue text, p_body bytea[], p_header text[], p_priority smallint[],
	p_delay_us bigint[], p_run_at timestamptz[], p_key text[], p_window_us bigint)
RETURNS TABLE (ord integer, job_id bigint, duplicate boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
	n    integer := cardinality(p_body);
	ids  bigint[];
	dup  boolean[] := array_fill(false, ARRAY[n]);
	k    text;
	got  bigint;
BEGIN
	ids := ARRAY(SELECT nextval('$S.jobs_id_seq') FROM generate_series(1, n));
	IF p_key IS NOT NULL THEN
		FOR i IN 1 .. n LOOP
			k := p_key[i];
			CONTINUE WHEN k IS NULL;
			got := NULL;
			INSERT INTO $S.dedup AS d (queue, key, job_id, expires_at)
				VALUES (p_queue, k, ids[i], now() + p_window_us * interval '1 microsecond')
				ON CONFLICT (queue, key) DO UPDATE SET job_id = EXCLUDED.job_id, expires_at = EXCLUDED.expires_at
					WHERE d.expires_at <= now()
				RETURNING d.job_id INTO got;
			IF got IS NULL THEN
				SELECT d.job_id INTO got FROM $S.dedup d WHERE d.queue = p_queue AND d.key = k;
				ids[i] := got;
				dup[i] := true;
			END IF;
		END LOOP;
	END IF;
	INSERT INTO $S.jobs (id, queue, state, priority, seq, visible_at, enqueued_at, queued_at, header, body)
	SELECT m.id, p_queue,
		CASE WHEN m.va <= now() THEN 0 ELSE 1 END,
		m.pr, m.id, greatest(m.va, now()), now(), now(), m.h::jsonb, m.b
	FROM (SELECT u.id, u.b, u.h, u.pr, u.d,
			coalesce(u.ra, now() + coalesce(u.dl, 0) * interval '1 microsecond') AS va
		FROM unnest(ids, p_body, p_header, p_priority, dup, p_run_at, p_delay_us) AS u(id, b, h, pr, d, ra, dl)) m
	WHERE NOT m.d
	ORDER BY m.id;
	PERFORM pg_notify($CHANNEL, p_queue);
	RETURN QUERY SELECT s::integer, ids[s], dup[s] FROM generate_subscripts(ids, 1) AS s;
END
$fn$;
`)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// notMigrated turns "relation does not exist" into ErrNotMigrated.
func notMigrated(ns string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000" || pgErr.Code == "42883") {
		return fmt.Errorf("%w: %q: %v", ErrNotMigrated, ns, err)
	}
	return err
}

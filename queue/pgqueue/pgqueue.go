package pgqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/batch"
	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
)

// Defaults and bounds of Config.
const (
	// DefaultPollInterval is how often a waiting Receive looks at the table
	// even without a notification.
	DefaultPollInterval = time.Second
	// MinPollInterval bounds PollInterval from below.
	MinPollInterval = 10 * time.Millisecond
	// DefaultDeadRetention is how long dead letters are kept.
	DefaultDeadRetention = 7 * 24 * time.Hour
	// DefaultCleanupInterval is how often a node runs Cleanup.
	DefaultCleanupInterval = 30 * time.Second
	// CleanupBatch bounds the rows one cleanup statement deletes.
	CleanupBatch = 10_000
	// MaxMessageSize bounds Config.MaxMessageSize.
	MaxMessageSize = 64 << 20
	// DefaultReconnectMin and DefaultReconnectMax bound the LISTEN
	// connection's reconnection backoff (exponential, full jitter).
	DefaultReconnectMin = 100 * time.Millisecond
	DefaultReconnectMax = 5 * time.Second
	// SettleTimeout bounds one batched ack or extension statement.
	SettleTimeout = 30 * time.Second
)

// counterShards is how many rows share a queue's outcome counters.
const counterShards = 16

// Config configures a Backend. The zero value is usable: every field says
// its default.
type Config struct {
	// Namespace is the migrated namespace to use (see Migrate): a
	// PostgreSQL schema name of lower-case letters, digits and '_', at most
	// 48 bytes. Empty means DefaultNamespace.
	Namespace string
	// MaxMessageSize bounds len(Body) plus the header's keys and values;
	// Enqueue of a larger message fails with queue.ErrTooLarge and stores
	// nothing. Zero means queue.DefaultMaxMessageSize (256 KiB); at most
	// MaxMessageSize (64 MiB).
	MaxMessageSize int
	// DedupWindow is how long a DedupKey is remembered after the first
	// message that carried it. Zero means queue.DefaultDedupWindow (5m).
	// Expired keys are deleted by the cleanup.
	DedupWindow time.Duration
	// Retention keeps acked messages in the table (state done) this long,
	// for inspection; the cleanup deletes them after. Zero deletes a
	// message when it is acked.
	Retention time.Duration
	// DeadRetention is how long a dead letter is kept before the cleanup
	// deletes it: the bound of the dead-letter queue. Zero means
	// DefaultDeadRetention (7 days); negative keeps dead letters until
	// they are redriven (the table then grows with them).
	DeadRetention time.Duration
	// PollInterval is how often a waiting Receive reads the table when
	// nothing woke it: the fallback for lost notifications and for
	// poolers that break LISTEN (see NoListen). Zero means
	// DefaultPollInterval (1s); at least MinPollInterval (10ms).
	PollInterval time.Duration
	// NoListen stops the backend from holding a LISTEN connection, for a
	// pooler in transaction mode (PgBouncer) that breaks LISTEN: waiting
	// receivers are then woken by enqueues of this node and, for the
	// others', by polling every PollInterval; lower it accordingly.
	NoListen bool
	// CleanupInterval is how often this node runs Cleanup (one node at a
	// time does it). Zero means DefaultCleanupInterval (30s); negative
	// disables the cleanup on this node.
	CleanupInterval time.Duration
	// ReconnectMin and ReconnectMax bound the LISTEN connection's
	// reconnection backoff. Zero means DefaultReconnectMin (100ms) and
	// DefaultReconnectMax (5s).
	ReconnectMin, ReconnectMax time.Duration
	// DurableSettle commits what consumers do (Receive, Ack, Extend,
	// Nack, DeadLetter) with the server's synchronous_commit. By default
	// those transactions commit with synchronous_commit off, which halves
	// their cost: a crash of the database server (not of a consumer) may
	// then forget the last few hundred milliseconds of them, and every
	// such loss ends in a redelivery (a forgotten ack, nack or lease makes
	// the message visible again), which at-least-once delivery allows.
	// Enqueue, Redrive, Pause, Resume and your own transactions always
	// commit as the server is configured, so an enqueue that returned is
	// as durable as the server makes it.
	DurableSettle bool
	// Clock drives the backend's own timers: waits, polls, reconnection
	// and the cleanup. Leases, delays and the dedup window are kept by
	// the database's clock (now()). Nil means the real clock.
	Clock clock.Clock
}

// Backend is a queue.Backend on PostgreSQL. Open one per node (process) and
// namespace; its methods are safe for concurrent use.
type Backend struct {
	db     *pgxpool.Pool
	ownsDB bool
	n      names
	cfg    Config
	sql    queries
	clock  clock.Clock
	policy backoff.Policy
	listen *pgx.ConnConfig

	wake   waiters
	settle chan *settleReq

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the listener, the settler, the cleanup
	closed    atomic.Bool
	closeOnce sync.Once
}

var _ queue.Backend = (*Backend)(nil)

type queries struct {
	enqueue, enqueueOne, promote, take, nextDue, nack, dead, ack, ackTx, extend string
	deadFirst, deadAfter, redriveAll, redriveIDs, pause, resume, stats          string
	cleanDone, cleanDead, cleanDedup, check                                     string
}

const durableCfg = `WITH cfg AS (SELECT)`

func ackSQL(cfg, finish string) string {
	return cfg + `, r AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS r(queue, id, token) WHERE EXISTS (SELECT FROM cfg)),
a AS (` + finish + `
	WHERE j.id = r.id AND j.queue = r.queue AND j.token = r.token AND j.state = 2 AND j.visible_at > now()
	RETURNING j.id, j.queue),
k AS (
	INSERT INTO $S.counters AS k (queue, shard, processed)
	SELECT queue, $4, count(*) FROM a GROUP BY queue ORDER BY queue
	ON CONFLICT (queue, shard) DO UPDATE SET processed = k.processed + EXCLUDED.processed)
SELECT id FROM a`
}

func sqlFor(n names, retain, durable bool) queries {
	r := strings.NewReplacer("$S", n.schema)
	s := func(q string) string { return r.Replace(q) }
	// finish is what an ack does to the row: delete it, or keep it done.
	finish := `DELETE FROM $S.jobs j USING r`
	if retain {
		finish = `UPDATE $S.jobs j SET state = 4, finished_at = now(), token = 0 FROM r`
	}
	// fast starts the settling statements (Receive's, Ack's, Extend's,
	// Nack's, DeadLetter's): with durable false, their transaction commits
	// with synchronous_commit off. Each statement references cfg, so
	// that the setting is in force before it changes a row.
	fast := `WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true))`
	if durable {
		fast = durableCfg
	}
	return queries{
		check:   s(`SELECT (SELECT count(*) FROM $S.jobs WHERE false) + (SELECT count(*) FROM $S.queues WHERE false)`),
		enqueue: s(`SELECT ord, job_id, duplicate FROM $S.enqueue($1, $2, $3, $4, $5, $6, $7, $8)`),
		// enqueueOne is the enqueue function's work for the common case,
		// one message without a dedup key, as one plain statement.
		enqueueOne: s(`WITH v AS (SELECT coalesce($6::timestamptz, now() + $5::bigint * interval '1 microsecond') AS va, nextval('$S.jobs_id_seq') AS id),
i AS (
	INSERT INTO $S.jobs (id, queue, state, priority, seq, visible_at, enqueued_at, queued_at, header, body)
	SELECT v.id, $1, CASE WHEN v.va <= now() THEN 0 ELSE 1 END, $4, v.id, greatest(v.va, now()), now(), now(), $3::jsonb, $2
	FROM v RETURNING id)
SELECT i.id FROM i, LATERAL (SELECT pg_notify($7, $1)) n`),
		// promote is the reaper: it makes visible the rows whose delay or
		// lease has passed. It runs before each take, in the same
		// transaction, and reads only due rows of jobs_timed.
		promote: s(fast + `UPDATE $S.jobs SET state = 0, token = 0 WHERE id IN (
	SELECT id FROM $S.jobs WHERE queue = $1 AND state IN (1, 2) AND visible_at <= now()
	ORDER BY visible_at LIMIT 1000 FOR UPDATE SKIP LOCKED) AND EXISTS (SELECT FROM cfg)`),
		take: s(`WITH c AS (
	SELECT id FROM $S.jobs
	WHERE queue = $1 AND state = 0 AND NOT EXISTS (SELECT 1 FROM $S.queues q WHERE q.name = $1 AND q.paused)
	ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED),
u AS (
	UPDATE $S.jobs j SET state = 2, visible_at = now() + $3::bigint * interval '1 microsecond', attempts = j.attempts + 1, token = $4
	FROM c WHERE j.id = c.id
	RETURNING j.id, j.seq, j.priority, j.attempts, j.enqueued_at, j.last_error, j.header, j.body),
k AS (
	INSERT INTO $S.counters AS k (queue, shard, retried)
	SELECT $1, $5, count(*) FROM u WHERE u.attempts > 1 HAVING count(*) > 0
	ON CONFLICT (queue, shard) DO UPDATE SET retried = k.retried + EXCLUDED.retried)
SELECT id, priority, attempts, enqueued_at, last_error, header, body FROM u ORDER BY priority DESC, seq`),
		nextDue: s(`SELECT extract(epoch FROM min(visible_at) - now())::float8 FROM $S.jobs WHERE queue = $1 AND state IN (1, 2)`),
		nack: s(fast + `, u AS (
	UPDATE $S.jobs SET state = CASE WHEN $4::bigint > 0 THEN 1 ELSE 0 END,
		visible_at = now() + $4::bigint * interval '1 microsecond', token = 0, last_error = $5
	WHERE id = $2 AND queue = $1 AND token = $3 AND state = 2 AND visible_at > now() AND EXISTS (SELECT FROM cfg)
	RETURNING id),
k AS (
	INSERT INTO $S.counters AS k (queue, shard, failed) SELECT $1, $6, 1 FROM u
	ON CONFLICT (queue, shard) DO UPDATE SET failed = k.failed + 1)
SELECT count(*) FROM u, LATERAL (SELECT pg_notify($7, $1)) n`),
		dead: s(fast + `, u AS (
	UPDATE $S.jobs SET state = 3, finished_at = now(), token = 0, last_error = $4
	WHERE id = $2 AND queue = $1 AND token = $3 AND state = 2 AND visible_at > now() AND EXISTS (SELECT FROM cfg)
	RETURNING id),
k AS (
	INSERT INTO $S.counters AS k (queue, shard, failed) SELECT $1, $5, 1 FROM u
	ON CONFLICT (queue, shard) DO UPDATE SET failed = k.failed + 1)
SELECT count(*) FROM u`),
		// ack settles a batch of receipts (queue, id, token) in one
		// statement and returns the ids it acked; ackTx is the same in
		// the caller's transaction, whose commit it leaves alone.
		ack:   s(ackSQL(fast, finish)),
		ackTx: s(ackSQL(durableCfg, finish)),
		extend: s(fast + `UPDATE $S.jobs j SET visible_at = now() + r.lease * interval '1 microsecond'
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS r(queue, id, token, lease)
WHERE j.id = r.id AND j.queue = r.queue AND j.token = r.token AND j.state = 2 AND j.visible_at > now() AND EXISTS (SELECT FROM cfg)
RETURNING j.id`),
		deadFirst: s(`SELECT id, body, header, priority, attempts, enqueued_at, finished_at, coalesce(last_error, '')
FROM $S.jobs WHERE queue = $1 AND state = 3 ORDER BY finished_at, id LIMIT $2`),
		deadAfter: s(`SELECT id, body, header, priority, attempts, enqueued_at, finished_at, coalesce(last_error, '')
FROM $S.jobs WHERE queue = $1 AND state = 3 AND (finished_at, id) > ($3, $4) ORDER BY finished_at, id LIMIT $2`),
		redriveAll: s(`WITH u AS (
	UPDATE $S.jobs SET state = 0, attempts = 0, token = 0, seq = nextval('$S.jobs_id_seq'), visible_at = now(), queued_at = now(), finished_at = NULL
	WHERE queue = $1 AND state = 3 RETURNING id)
SELECT count(*) FROM u, LATERAL (SELECT pg_notify($2, $1)) n`),
		redriveIDs: s(`WITH u AS (
	UPDATE $S.jobs SET state = 0, attempts = 0, token = 0, seq = nextval('$S.jobs_id_seq'), visible_at = now(), queued_at = now(), finished_at = NULL
	WHERE queue = $1 AND state = 3 AND id = ANY($3::bigint[]) RETURNING id)
SELECT count(*) FROM u, LATERAL (SELECT pg_notify($2, $1)) n`),
		pause: s(`INSERT INTO $S.queues (name, paused) VALUES ($1, true) ON CONFLICT (name) DO UPDATE SET paused = true`),
		resume: s(`WITH u AS (
	INSERT INTO $S.queues (name, paused) VALUES ($1, false) ON CONFLICT (name) DO UPDATE SET paused = false RETURNING name)
SELECT pg_notify($2, name) FROM u`),
		stats: s(`SELECT
	count(*) FILTER (WHERE state = 0 OR visible_at <= now()),
	count(*) FILTER (WHERE state = 2 AND visible_at > now()),
	count(*) FILTER (WHERE state = 1 AND visible_at > now()),
	coalesce(extract(epoch FROM now() - min(queued_at)), 0)::float8,
	(SELECT count(*) FROM $S.jobs WHERE queue = $1 AND state = 3),
	(SELECT coalesce(sum(processed), 0)::bigint FROM $S.counters WHERE queue = $1),
	(SELECT coalesce(sum(failed), 0)::bigint FROM $S.counters WHERE queue = $1),
	(SELECT coalesce(sum(retried), 0)::bigint FROM $S.counters WHERE queue = $1),
	coalesce((SELECT paused FROM $S.queues WHERE name = $1), false)
FROM $S.jobs WHERE queue = $1 AND state IN (0, 1, 2)`),
		cleanDone: s(`DELETE FROM $S.jobs WHERE id IN (
	SELECT id FROM $S.jobs WHERE state = 4 AND finished_at < now() - $1::bigint * interval '1 microsecond' LIMIT $2)`),
		cleanDead: s(`DELETE FROM $S.jobs WHERE id IN (
	SELECT id FROM $S.jobs WHERE state = 3 AND finished_at < now() - $1::bigint * interval '1 microsecond' LIMIT $2)`),
		cleanDedup: s(`DELETE FROM $S.dedup WHERE ctid IN (SELECT ctid FROM $S.dedup WHERE expires_at <= now() LIMIT $1)`),
	}
}

// New returns a backend on db, a pool the caller owns (Close leaves it
// open), for the namespace cfg names, which Migrate must have created
// (otherwise it fails with ErrNotMigrated). Unless cfg.NoListen, it opens
// the node's LISTEN connection (with db's connection settings) before it
// returns, and fails if it cannot.
func New(ctx context.Context, db *pgxpool.Pool, cfg Config) (*Backend, error) {
	n, err := namesFor(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = queue.DefaultMaxMessageSize
	}
	cfg.MaxMessageSize = min(cfg.MaxMessageSize, MaxMessageSize)
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = queue.DefaultDedupWindow
	}
	cfg.Retention = max(cfg.Retention, 0)
	if cfg.DeadRetention == 0 {
		cfg.DeadRetention = DefaultDeadRetention
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	cfg.PollInterval = max(cfg.PollInterval, MinPollInterval)
	if cfg.CleanupInterval == 0 {
		cfg.CleanupInterval = DefaultCleanupInterval
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = DefaultReconnectMin
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = DefaultReconnectMax
	}
	b := &Backend{
		db:     db,
		n:      n,
		cfg:    cfg,
		sql:    sqlFor(n, cfg.Retention > 0, cfg.DurableSettle),
		clock:  clock.Or(cfg.Clock),
		policy: backoff.Policy{Base: cfg.ReconnectMin, Max: cfg.ReconnectMax},
		listen: db.Config().ConnConfig.Copy(),
		settle: make(chan *settleReq, queue.MaxBatch),
	}
	b.wake.m = make(map[string]*waitList)
	if _, err := db.Exec(ctx, b.sql.check); err != nil {
		return nil, fmt.Errorf("pgqueue: %w", notMigrated(n.ns, err))
	}
	var conn *pgx.Conn
	if !cfg.NoListen {
		if conn, err = b.connectListener(ctx); err != nil {
			return nil, err
		}
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if conn != nil {
		b.wg.Add(1)
		go b.listenLoop(conn)
	}
	b.wg.Add(1)
	go b.settleLoop()
	if cfg.CleanupInterval > 0 {
		b.wg.Add(1)
		go b.cleanupLoop()
	}
	return b, nil
}

// Connect is New on a pool it opens from a PostgreSQL URL; Close closes
// that pool.
func Connect(ctx context.Context, url string, cfg Config) (*Backend, error) {
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	b, err := New(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	b.ownsDB = true
	return b, nil
}

// Namespace returns the quoted name of the backend's PostgreSQL schema, to
// query its tables (jobs, dedup, queues, counters) by hand.
func (b *Backend) Namespace() string { return b.n.schema }

// Close stops the backend's goroutines and waits for them: waiting
// Receives and unsettled Acks and Extends return queue.ErrClosed, and so
// does every later call. It closes the pool only if Connect opened it.
// Messages stay in the database. Close is idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.cancel()
		b.wake.all()
		b.wg.Wait()
		if b.ownsDB {
			b.db.Close()
		}
	})
	return nil
}

// fail maps an error of a call to what the caller should see: ErrClosed
// once the backend is closed, ctx's error once ctx ended.
func (b *Backend) fail(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case b.closed.Load():
		return queue.ErrClosed
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("pgqueue: %w", notMigrated(b.n.ns, err))
}

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Enqueue implements queue.Backend: one statement (the enqueue function)
// stores the batch, applies deduplication and notifies waiting receivers.
func (b *Backend) Enqueue(ctx context.Context, name string, msgs []queue.Message) ([]queue.EnqueueResult, error) {
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	res, err := b.enqueue(ctx, b.db, name, msgs)
	if err != nil {
		return nil, b.fail(ctx, err)
	}
	b.wake.wake(name) // this node's receivers need not wait for the notification
	return res, nil
}

// EnqueueTx enqueues msgs within tx, the caller's transaction: the
// messages exist, and receivers are woken, only if tx commits. It checks
// its arguments as queue.Queue does (the name, at most queue.MaxBatch
// messages, each within the bounds of queue.Message).
func (b *Backend) EnqueueTx(ctx context.Context, tx pgx.Tx, name string, msgs []queue.Message) ([]queue.EnqueueResult, error) {
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	if err := checkBatch(name, msgs); err != nil {
		return nil, err
	}
	res, err := b.enqueue(ctx, tx, name, msgs)
	if err != nil {
		return nil, b.fail(ctx, err)
	}
	return res, nil
}

func (b *Backend) enqueue(ctx context.Context, q querier, name string, msgs []queue.Message) ([]queue.EnqueueResult, error) {
	n := len(msgs)
	bodies := make([][]byte, n)
	headers := make([]*string, n)
	prios := make([]int16, n)
	delays := make([]int64, n)
	runAt := make([]*time.Time, n)
	var keys []*string // NULL unless a message has a key
	for i := range msgs {
		m := &msgs[i]
		size := len(m.Body)
		for k, v := range m.Header {
			size += len(k) + len(v)
		}
		if size > b.cfg.MaxMessageSize {
			return nil, fmt.Errorf("%w: %d bytes, limit %d", queue.ErrTooLarge, size, b.cfg.MaxMessageSize)
		}
		bodies[i] = m.Body
		if bodies[i] == nil {
			bodies[i] = []byte{}
		}
		if len(m.Header) > 0 {
			h, err := json.Marshal(m.Header)
			if err != nil {
				return nil, err
			}
			s := string(h)
			headers[i] = &s
		}
		prios[i] = int16(m.Priority)
		delays[i] = m.Delay.Microseconds()
		if !m.RunAt.IsZero() {
			runAt[i] = &m.RunAt
		}
		if m.DedupKey != "" {
			if keys == nil {
				keys = make([]*string, n)
			}
			keys[i] = &m.DedupKey
		}
	}
	if n == 1 && keys == nil {
		var id int64
		if err := q.QueryRow(ctx, b.sql.enqueueOne, name, bodies[0], headers[0], prios[0], delays[0], runAt[0], b.n.channel).Scan(&id); err != nil {
			return nil, err
		}
		return []queue.EnqueueResult{{ID: strconv.FormatInt(id, 10)}}, nil
	}
	rows, err := q.Query(ctx, b.sql.enqueue, name, bodies, headers, prios, delays, runAt, keys, b.cfg.DedupWindow.Microseconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := make([]queue.EnqueueResult, n)
	for rows.Next() {
		var (
			ord int32
			id  int64
			dup bool
		)
		if err := rows.Scan(&ord, &id, &dup); err != nil {
			return nil, err
		}
		if ord >= 1 && int(ord) <= n {
			res[ord-1] = queue.EnqueueResult{ID: strconv.FormatInt(id, 10), Duplicate: dup}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// checkBatch checks what queue.Queue checks, for the calls that bypass it.
func checkBatch(name string, msgs []queue.Message) error {
	if err := queue.ValidateName(name); err != nil {
		return err
	}
	if len(msgs) == 0 || len(msgs) > queue.MaxBatch {
		return &queue.InvalidError{Arg: "batch", Reason: fmt.Sprintf("%d messages, want 1 to %d", len(msgs), queue.MaxBatch)}
	}
	for _, m := range msgs {
		var reason, arg string
		switch {
		case m.Delay < 0 || m.Delay > queue.MaxDelay:
			arg, reason = "delay", fmt.Sprintf("%v is outside [0, %v]", m.Delay, queue.MaxDelay)
		case m.Delay != 0 && !m.RunAt.IsZero():
			arg, reason = "delay", "set Delay or RunAt, not both"
		case m.Priority < queue.MinPriority || m.Priority > queue.MaxPriority:
			arg, reason = "priority", fmt.Sprintf("%d is outside [%d, %d]", m.Priority, queue.MinPriority, queue.MaxPriority)
		case len(m.DedupKey) > queue.MaxDedupKeyLen:
			arg, reason = "dedup key", fmt.Sprintf("longer than %d bytes", queue.MaxDedupKeyLen)
		case len(m.Header) > queue.MaxHeaders:
			arg, reason = "header", fmt.Sprintf("%d entries, more than %d", len(m.Header), queue.MaxHeaders)
		}
		if _, ok := m.Header[""]; ok && arg == "" {
			arg, reason = "header", "empty key"
		}
		if arg != "" {
			return &queue.InvalidError{Arg: arg, Reason: reason}
		}
	}
	return nil
}

// Receive implements queue.Backend. Each attempt is one round trip: the
// reaper statement (due delays and expired leases become visible) and the
// take (one UPDATE over a FOR UPDATE SKIP LOCKED select), pipelined in one
// transaction. When nothing is visible it waits for a notification of the
// queue, the next due time of its delayed and leased messages, or
// PollInterval, whichever comes first, then tries again.
func (b *Backend) Receive(ctx context.Context, name string, opts queue.ReceiveOptions) ([]queue.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var deadline time.Time
	for {
		if b.closed.Load() {
			return nil, queue.ErrClosed
		}
		// Register before looking, so that a notification that comes
		// after the look is not missed.
		w := b.wake.add(name)
		ds, err := b.take(ctx, name, opts)
		if err != nil || len(ds) > 0 {
			b.wake.remove(name, w)
			return ds, b.fail(ctx, err)
		}
		now := b.clock.Now()
		if deadline.IsZero() {
			deadline = now.Add(opts.Wait)
		}
		left := deadline.Sub(now)
		if left <= 0 {
			b.wake.remove(name, w)
			return nil, nil
		}
		d := min(left, b.cfg.PollInterval)
		var due *float64
		if err := b.db.QueryRow(ctx, b.sql.nextDue, name).Scan(&due); err != nil {
			b.wake.remove(name, w)
			return nil, b.fail(ctx, err)
		}
		if due != nil {
			d = min(d, max(time.Duration(*due*float64(time.Second)), time.Millisecond))
		}
		t := b.clock.NewTimer(d)
		var stop error
		select {
		case <-w.ch:
		case <-t.C():
		case <-ctx.Done():
			stop = ctx.Err()
		case <-b.ctx.Done():
			stop = queue.ErrClosed
		}
		t.Stop()
		b.wake.remove(name, w)
		if stop != nil {
			return nil, stop
		}
	}
}

func (b *Backend) take(ctx context.Context, name string, opts queue.ReceiveOptions) ([]queue.Delivery, error) {
	token := rand.Int64N(math.MaxInt64-1) + 1
	batch := &pgx.Batch{}
	batch.Queue(b.sql.promote, name)
	batch.Queue(b.sql.take, name, opts.Max, opts.Lease.Microseconds(), token, shard())
	br := b.db.SendBatch(ctx, batch)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ds []queue.Delivery
	for rows.Next() {
		var (
			id       int64
			priority int16
			attempts int32
			at       time.Time
			lastErr  *string
			header   map[string]string
			body     []byte
		)
		if err := rows.Scan(&id, &priority, &attempts, &at, &lastErr, &header, &body); err != nil {
			return nil, err
		}
		d := queue.Delivery{
			ID: strconv.FormatInt(id, 10), Body: body, Header: header, Priority: int(priority),
			Attempt: int(attempts), EnqueuedAt: at, Receipt: makeReceipt(id, token),
		}
		if lastErr != nil {
			d.LastError = *lastErr
		}
		ds = append(ds, d)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return ds, br.Close()
}

func shard() int16 { return int16(rand.IntN(counterShards)) }

// A receipt is "<id>.<token in base 36>": the id finds the row, the token
// (random per Receive) proves the lease is the current one.
func makeReceipt(id, token int64) queue.Receipt {
	var buf [20 + 1 + 13]byte
	b := strconv.AppendInt(buf[:0], id, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, token, 36)
	return queue.Receipt(b)
}

func parseReceipt(r queue.Receipt) (id, token int64, err error) {
	a, t, ok := strings.Cut(string(r), ".")
	if ok {
		id, err = strconv.ParseInt(a, 10, 64)
		if err == nil {
			token, err = strconv.ParseInt(t, 36, 64)
		}
	}
	if !ok || err != nil || id <= 0 || token <= 0 {
		return 0, 0, &queue.InvalidError{Arg: "receipt", Reason: "not a receipt of this backend"}
	}
	return id, token, nil
}

// Extend implements queue.Backend. Concurrent extensions (and acks) are
// settled together, in one statement per round trip.
func (b *Backend) Extend(ctx context.Context, name string, r queue.Receipt, lease time.Duration) error {
	return b.settleOne(ctx, &settleReq{queue: name, leaseUS: lease.Microseconds()}, r)
}

// Ack implements queue.Backend. Concurrent acks (and extensions) are
// settled together, in one statement per round trip; Ack returns when the
// statement that holds its receipt has committed.
func (b *Backend) Ack(ctx context.Context, name string, r queue.Receipt) error {
	return b.settleOne(ctx, &settleReq{queue: name, ack: true}, r)
}

// AckTx acks within tx, the caller's transaction: the message is gone only
// if tx commits; if tx rolls back, the lease goes on as if Ack had not
// been called. It fails with queue.ErrStaleReceipt as Ack does. A handler
// run by a queue.Worker that acks this way makes the worker's own ack
// fail as stale (it logs a lost lease); use it from your own Receive loop.
func (b *Backend) AckTx(ctx context.Context, tx pgx.Tx, name string, r queue.Receipt) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	if err := queue.ValidateName(name); err != nil {
		return err
	}
	id, token, err := parseReceipt(r)
	if err != nil {
		return err
	}
	rows, err := tx.Query(ctx, b.sql.ackTx, []string{name}, []int64{id}, []int64{token}, shard())
	if err != nil {
		return b.fail(ctx, err)
	}
	defer rows.Close()
	acked := rows.Next()
	rows.Close()
	if err := rows.Err(); err != nil {
		return b.fail(ctx, err)
	}
	if !acked {
		return queue.ErrStaleReceipt
	}
	return nil
}

// Nack implements queue.Backend.
func (b *Backend) Nack(ctx context.Context, name string, r queue.Receipt, delay time.Duration, lastErr string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	id, token, err := parseReceipt(r)
	if err != nil {
		return err
	}
	var n int64
	if err := b.db.QueryRow(ctx, b.sql.nack, name, id, token, delay.Microseconds(), lastErr, shard(), b.n.channel).Scan(&n); err != nil {
		return b.fail(ctx, err)
	}
	if n == 0 {
		return queue.ErrStaleReceipt
	}
	b.wake.wake(name)
	return nil
}

// DeadLetter implements queue.Backend.
func (b *Backend) DeadLetter(ctx context.Context, name string, r queue.Receipt, lastErr string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	id, token, err := parseReceipt(r)
	if err != nil {
		return err
	}
	var n int64
	if err := b.db.QueryRow(ctx, b.sql.dead, name, id, token, lastErr, shard()).Scan(&n); err != nil {
		return b.fail(ctx, err)
	}
	if n == 0 {
		return queue.ErrStaleReceipt
	}
	return nil
}

// ListDead implements queue.Backend. Its cursor is the death time (Unix
// microseconds) and id of the last dead letter returned.
func (b *Backend) ListDead(ctx context.Context, name string, cursor string, limit int) ([]queue.DeadMessage, string, error) {
	if b.closed.Load() {
		return nil, "", queue.ErrClosed
	}
	var rows pgx.Rows
	var err error
	if cursor == "" {
		rows, err = b.db.Query(ctx, b.sql.deadFirst, name, limit+1)
	} else {
		us, id, ok := parseDeadCursor(cursor)
		if !ok {
			return nil, "", &queue.InvalidError{Arg: "cursor", Reason: "not a cursor of this backend"}
		}
		rows, err = b.db.Query(ctx, b.sql.deadAfter, name, limit+1, time.UnixMicro(us), id)
	}
	if err != nil {
		return nil, "", b.fail(ctx, err)
	}
	defer rows.Close()
	var out []queue.DeadMessage
	var lastID int64
	more := false
	for rows.Next() {
		var (
			id       int64
			priority int16
			attempts int32
			m        queue.DeadMessage
		)
		if err := rows.Scan(&id, &m.Body, &m.Header, &priority, &attempts, &m.EnqueuedAt, &m.DeadAt, &m.LastError); err != nil {
			return nil, "", b.fail(ctx, err)
		}
		m.ID, m.Priority, m.Attempts = strconv.FormatInt(id, 10), int(priority), int(attempts)
		if len(out) == limit {
			more = true // the row beyond the page: limit+1 were asked
			break
		}
		out = append(out, m)
		lastID = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, "", b.fail(ctx, err)
	}
	next := ""
	if more && len(out) > 0 {
		next = strconv.FormatInt(out[len(out)-1].DeadAt.UnixMicro(), 10) + "." + strconv.FormatInt(lastID, 10)
	}
	return out, next, nil
}

func parseDeadCursor(c string) (us, id int64, ok bool) {
	a, i, found := strings.Cut(c, ".")
	if !found {
		return 0, 0, false
	}
	us, err1 := strconv.ParseInt(a, 10, 64)
	id, err2 := strconv.ParseInt(i, 10, 64)
	return us, id, err1 == nil && err2 == nil
}

// Redrive implements queue.Backend: one statement moves the dead letters
// back, at the back of their priority, and notifies waiting receivers.
func (b *Backend) Redrive(ctx context.Context, name string, ids []string) (int, error) {
	if b.closed.Load() {
		return 0, queue.ErrClosed
	}
	var n int64
	var err error
	if len(ids) == 0 {
		err = b.db.QueryRow(ctx, b.sql.redriveAll, name, b.n.channel).Scan(&n)
	} else {
		nums := make([]int64, 0, len(ids))
		for _, s := range ids {
			if v, perr := strconv.ParseInt(s, 10, 64); perr == nil {
				nums = append(nums, v) // anything else is no dead letter here
			}
		}
		if len(nums) == 0 {
			return 0, nil
		}
		err = b.db.QueryRow(ctx, b.sql.redriveIDs, name, b.n.channel, nums).Scan(&n)
	}
	if err != nil {
		return 0, b.fail(ctx, err)
	}
	if n > 0 {
		b.wake.wake(name)
	}
	return int(n), nil
}

// Pause implements queue.Backend; it holds for every node.
func (b *Backend) Pause(ctx context.Context, name string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	_, err := b.db.Exec(ctx, b.sql.pause, name)
	return b.fail(ctx, err)
}

// Resume implements queue.Backend; it wakes waiting receivers on every
// node.
func (b *Backend) Resume(ctx context.Context, name string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	if _, err := b.db.Exec(ctx, b.sql.resume, name, b.n.channel); err != nil {
		return b.fail(ctx, err)
	}
	b.wake.wake(name)
	return nil
}

// Stats implements queue.Backend. It counts the queue's rows, so it costs
// time in proportion to the queue's depth: call it for monitoring, not per
// message. The counters (Processed, Failed, Retried) count since the
// namespace was created; DeadDropped counts nothing (dead letters leave by
// DeadRetention, not at a count bound).
func (b *Backend) Stats(ctx context.Context, name string) (queue.Stats, error) {
	if b.closed.Load() {
		return queue.Stats{}, queue.ErrClosed
	}
	var (
		s                          queue.Stats
		depth, inFlight, delayed   int64
		dead                       int64
		oldest                     float64
		processed, failed, retried int64
	)
	err := b.db.QueryRow(ctx, b.sql.stats, name).Scan(&depth, &inFlight, &delayed, &oldest, &dead, &processed, &failed, &retried, &s.Paused)
	if err != nil {
		return queue.Stats{}, b.fail(ctx, err)
	}
	s.Depth, s.InFlight, s.Delayed, s.Dead = int(depth), int(inFlight), int(delayed), int(dead)
	s.Processed, s.Failed, s.Retried = uint64(processed), uint64(failed), uint64(retried)
	s.OldestAge = max(time.Duration(oldest*float64(time.Second)), 0)
	return s, nil
}

// Cleanup deletes what retention no longer keeps: acked messages older
// than Retention, dead letters older than DeadRetention, and dedup keys
// whose window has passed, in statements of at most CleanupBatch rows. It
// returns at once (0, nil) when another node is cleaning the namespace.
// Each node's cleanup loop calls it every CleanupInterval.
func (b *Backend) Cleanup(ctx context.Context) (deleted int64, err error) {
	conn, err := b.db.Acquire(ctx)
	if err != nil {
		return 0, b.fail(ctx, err)
	}
	defer conn.Release()
	var mine bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", b.n.cleanKey).Scan(&mine); err != nil || !mine {
		return 0, b.fail(ctx, err)
	}
	defer func() {
		// Unlock even when ctx has ended, so that the connection goes
		// back to the pool without the lock.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", b.n.cleanKey); uerr != nil {
			conn.Conn().Close(uctx) // a broken connection drops its locks
		}
	}()
	type step struct {
		sql  string
		args []any
	}
	var steps []step
	if b.cfg.Retention > 0 {
		steps = append(steps, step{b.sql.cleanDone, []any{b.cfg.Retention.Microseconds(), CleanupBatch}})
	}
	if b.cfg.DeadRetention > 0 {
		steps = append(steps, step{b.sql.cleanDead, []any{b.cfg.DeadRetention.Microseconds(), CleanupBatch}})
	}
	steps = append(steps, step{b.sql.cleanDedup, []any{CleanupBatch}})
	for _, s := range steps {
		for {
			tag, err := conn.Exec(ctx, s.sql, s.args...)
			if err != nil {
				return deleted, b.fail(ctx, err)
			}
			deleted += tag.RowsAffected()
			if tag.RowsAffected() < CleanupBatch {
				break
			}
		}
	}
	return deleted, nil
}

func (b *Backend) cleanupLoop() {
	defer b.wg.Done()
	t := b.clock.NewTicker(b.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C():
			_, _ = b.Cleanup(b.ctx) // a failure is retried at the next tick
		}
	}
}

// settleReq is one Ack or Extend waiting for the settler.
type settleReq struct {
	ack       bool
	queue     string
	id, token int64
	leaseUS   int64
	done      chan error // buffered 1
}

func (b *Backend) settleOne(ctx context.Context, req *settleReq, r queue.Receipt) error {
	if err := b.submit(ctx, req, r); err != nil {
		return err
	}
	return b.settled(ctx, req)
}

// AckBatch implements queue.BatchAcker: the acks go to the settler
// together, which settles them in one round trip.
func (b *Backend) AckBatch(ctx context.Context, name string, rs []queue.Receipt) []error {
	return batch.Pipelined(len(rs), func(i int) (*settleReq, error) {
		req := &settleReq{queue: name, ack: true}
		return req, b.submit(ctx, req, rs[i])
	}, func(req *settleReq) error { return b.settled(ctx, req) })
}

// submit hands req, for receipt r, to the settler.
func (b *Backend) submit(ctx context.Context, req *settleReq, r queue.Receipt) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	id, token, err := parseReceipt(r)
	if err != nil {
		return err
	}
	req.id, req.token, req.done = id, token, make(chan error, 1)
	select {
	case b.settle <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return queue.ErrClosed
	}
}

// settled waits for the settler's outcome of req.
func (b *Backend) settled(ctx context.Context, req *settleReq) error {
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return queue.ErrClosed
	}
}

// settleLoop is the backend's one settler: it takes every Ack and Extend
// waiting (up to queue.MaxBatch) and settles them in one round trip, so
// concurrent handlers share commits instead of queueing for them.
func (b *Backend) settleLoop() {
	defer b.wg.Done()
	batch := make([]*settleReq, 0, queue.MaxBatch)
	for {
		select {
		case r := <-b.settle:
			batch = append(batch[:0], r)
		case <-b.ctx.Done():
			for {
				select {
				case r := <-b.settle:
					r.done <- queue.ErrClosed
				default:
					return
				}
			}
		}
	more:
		for len(batch) < queue.MaxBatch {
			select {
			case r := <-b.settle:
				batch = append(batch, r)
			default:
				break more
			}
		}
		b.flush(batch)
	}
}

// flush settles a batch: one pipelined round trip with up to two
// statements, the acks and the extensions.
func (b *Backend) flush(batch []*settleReq) {
	var (
		ackQ, extQ           []string
		ackID, ackTok        []int64
		extID, extTok, extUS []int64
		dups                 []*settleReq // a second ack of one receipt in this batch
		first                = make(map[int64]*settleReq)
	)
	for _, r := range batch {
		if r.ack {
			if _, ok := first[r.id]; ok {
				dups = append(dups, r)
				continue
			}
			first[r.id] = r
			ackQ, ackID, ackTok = append(ackQ, r.queue), append(ackID, r.id), append(ackTok, r.token)
			continue
		}
		extQ, extID, extTok, extUS = append(extQ, r.queue), append(extID, r.id), append(extTok, r.token), append(extUS, r.leaseUS)
	}
	ctx, cancel := context.WithTimeout(b.ctx, SettleTimeout)
	defer cancel()
	pb := &pgx.Batch{}
	if len(ackID) > 0 {
		pb.Queue(b.sql.ack, ackQ, ackID, ackTok, shard())
	}
	if len(extID) > 0 {
		pb.Queue(b.sql.extend, extQ, extID, extTok, extUS)
	}
	acked, extended, err := b.runSettle(ctx, pb, len(ackID) > 0, len(extID) > 0)
	if err != nil {
		err = b.fail(ctx, err)
	}
	for _, r := range batch {
		switch {
		case err != nil:
			r.done <- err
		case r.ack && slices.Contains(dups, r):
			r.done <- queue.ErrStaleReceipt
		case r.ack && acked[r.id], !r.ack && extended[r.id]:
			r.done <- nil
		default:
			r.done <- queue.ErrStaleReceipt
		}
	}
}

func (b *Backend) runSettle(ctx context.Context, pb *pgx.Batch, acks, exts bool) (acked, extended map[int64]bool, err error) {
	br := b.db.SendBatch(ctx, pb)
	defer br.Close()
	read := func() (map[int64]bool, error) {
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		got := make(map[int64]bool)
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return nil, err
			}
			got[id] = true
		}
		return got, rows.Err()
	}
	if acks {
		if acked, err = read(); err != nil {
			return nil, nil, err
		}
	}
	if exts {
		if extended, err = read(); err != nil {
			return nil, nil, err
		}
	}
	return acked, extended, br.Close()
}

// PrefetchPerHandler implements queue.PrefetchAdvisor: each row a receive
// takes is a row locked and written, so large receives buy little and
// contend with the acks of the rows before them.
func (b *Backend) PrefetchPerHandler() int { return 3 }

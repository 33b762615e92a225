package pgpubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults of Config.
const (
	// DefaultCleanupInterval is how often a node runs the cleanup.
	DefaultCleanupInterval = 10 * time.Second
	// DefaultReconnectMin and DefaultReconnectMax bound the feed's
	// reconnection backoff (exponential, full jitter).
	DefaultReconnectMin = 100 * time.Millisecond
	DefaultReconnectMax = 5 * time.Second
	// CleanupBatch bounds the rows one cleanup transaction deletes.
	CleanupBatch = 10_000
)

// maxPayload bounds the NOTIFY payload (PostgreSQL's limit is 8000 bytes);
// a message whose encoding is larger is notified by position only, and the
// feed reads it from the table.
const maxPayload = 7800

// feedPage is how many rows the feed reads per query when it catches up.
const feedPage = 1000

// Config configures a Broker. The zero value is usable: every field says
// its default.
type Config struct {
	// Namespace is the migrated namespace to use (see Schema). Empty means
	// DefaultNamespace.
	Namespace string
	// MaxMessageSize bounds len(Data) plus the header's keys and values;
	// Publish of a larger message fails with pubsub.ErrTooLarge. Zero
	// means pubsub.DefaultMaxMessageSize (1 MiB).
	MaxMessageSize int
	// CleanupInterval is how often this node deletes what retention no
	// longer keeps (one node at a time does it). Zero means
	// DefaultCleanupInterval; negative disables the cleanup on this node.
	CleanupInterval time.Duration
	// ReconnectMin and ReconnectMax bound the feed's reconnection backoff.
	// Zero means DefaultReconnectMin and DefaultReconnectMax.
	ReconnectMin, ReconnectMax time.Duration
	// CatchUp bounds how long Subscribe waits for this node's feed to
	// reach the newest message. Zero means pubsub.DefaultCatchUp.
	CatchUp time.Duration
	// Local are options of the local fan-out (pubsub.MaxTopics,
	// pubsub.WithClock). History and MaxMessageSize are ignored: the
	// table keeps history and Publish bounds the size.
	Local []pubsub.Option
}

// Broker is a pubsub.Backend on PostgreSQL. Each node (process) opens one
// Broker per namespace: it publishes into the namespace's table and reads
// the table through one LISTEN connection into a local fan-out. All
// methods are safe for concurrent use.
type Broker struct {
	db     *pgxpool.Pool
	ownsDB bool
	n      names
	cfg    Config
	sql    queries
	relay  *pubsub.Relay
	ids    ids.Generator
	policy backoff.Policy
	listen *pgx.ConnConfig

	cancel    context.CancelFunc
	wg        sync.WaitGroup // the feed and the cleanup
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	connects atomic.Int64 // feed connections established, the first included
}

var _ pubsub.Backend = (*Broker)(nil)

type queries struct {
	publish, head, start, read, readTopic, readPattern string
}

// readSQL reads, in one statement (one snapshot), the namespace's epoch,
// its trimmed watermark, and up to $2 messages after greatest($1,
// watermark) that pass filter. The watermark is the newest position that
// retention no longer keeps: the newest deleted one, or the newest beyond
// the count bound that the cleanup has not deleted yet. A reader after p
// has lost messages exactly when p < watermark.
func readSQL(schema, filter string) string {
	return strings.ReplaceAll(`
SELECT w.epoch, w.wm, m.pos, m.topic, m.msg_id, m.published_at, m.header, m.data
FROM (SELECT meta.epoch, greatest(meta.trimmed,
		CASE WHEN $1::bigint < (SELECT coalesce(max(pos), 0) FROM $S.messages) - meta.max_messages
		THEN (SELECT pos FROM $S.messages ORDER BY pos DESC OFFSET (SELECT max_messages FROM $S.meta) LIMIT 1) END) AS wm
	FROM $S.meta) w
LEFT JOIN LATERAL (SELECT * FROM $S.messages WHERE pos > greatest($1::bigint, w.wm) `+filter+` ORDER BY pos LIMIT $2) m ON true
ORDER BY m.pos`, "$S", schema)
}

// New returns a broker on db, a pool the caller owns (Close leaves it
// open), for the namespace cfg names, which Migrate must have created. It
// opens the node's LISTEN connection (with db's connection settings) before
// it returns, and fails if it cannot.
func New(ctx context.Context, db *pgxpool.Pool, cfg Config) (*Broker, error) {
	n, err := namesFor(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = pubsub.DefaultMaxMessageSize
	}
	if cfg.CleanupInterval == 0 {
		cfg.CleanupInterval = DefaultCleanupInterval
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = DefaultReconnectMin
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = DefaultReconnectMax
	}
	s := n.schema
	b := &Broker{
		db:     db,
		n:      n,
		cfg:    cfg,
		policy: backoff.Policy{Base: cfg.ReconnectMin, Max: cfg.ReconnectMax},
		listen: db.Config().ConnConfig.Copy(),
		sql: queries{
			publish:     "SELECT pos, epoch FROM " + s + ".publish($1, $2, $3, $4, $5, $6)",
			head:        "SELECT coalesce(max(pos), 0) FROM " + s + ".messages",
			start:       "SELECT epoch, greatest(trimmed, (SELECT coalesce(max(pos), 0) FROM " + s + ".messages)) FROM " + s + ".meta",
			read:        readSQL(s, ""),
			readTopic:   readSQL(s, "AND topic = $3"),
			readPattern: readSQL(s, "AND topic ~ $3"),
		},
	}
	conn, epoch, start, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	// The engine bounded message sizes at Publish (this node's or another's);
	// the local fan-out must not refuse what the engine accepted.
	local := append(append([]pubsub.Option(nil), cfg.Local...), pubsub.MaxMessageSize(math.MaxInt))
	b.relay = pubsub.NewRelay(pubsub.RelayConfig{
		Epoch:   epoch,
		Start:   pubsub.Position{Lo: uint64(start)},
		History: b.history,
		Head:    b.head,
		CatchUp: cfg.CatchUp,
		Options: local,
	})
	feedCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.wg.Add(1)
	go b.feed(feedCtx, conn)
	if cfg.CleanupInterval > 0 {
		b.wg.Add(1)
		go b.cleanupLoop(feedCtx)
	}
	return b, nil
}

// Connect is New on a pool it opens from a PostgreSQL URL; Close closes
// that pool.
func Connect(ctx context.Context, url string, cfg Config) (*Broker, error) {
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

// connect opens the LISTEN connection and reads, after LISTEN is in effect,
// the namespace's epoch and newest position.
func (b *Broker) connect(ctx context.Context) (*pgx.Conn, string, int64, error) {
	conn, err := pgx.ConnectConfig(ctx, b.listen)
	if err != nil {
		return nil, "", 0, fmt.Errorf("pgpubsub: connecting the feed: %w", err)
	}
	var epoch string
	var start int64
	if _, err = conn.Exec(ctx, b.n.listen); err == nil {
		err = conn.QueryRow(ctx, b.sql.start).Scan(&epoch, &start)
	}
	if err != nil {
		closeConn(conn)
		return nil, "", 0, fmt.Errorf("pgpubsub: starting the feed: %w", notMigrated(b.n.ns, err))
	}
	b.connects.Add(1)
	return conn, epoch, start, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// Epoch returns the epoch of the namespace's history as this node knows it.
func (b *Broker) Epoch() string { return b.relay.Epoch() }

// Stats returns the counters of this node's local fan-out.
// Head returns the cursor of the engine's newest message (pubsub.HeadReader).
func (b *Broker) Head(ctx context.Context) (pubsub.Cursor, error) { return b.relay.Head(ctx) }

func (b *Broker) Stats() pubsub.Stats { return b.relay.Stats() }

// Publish inserts m into the namespace's table and returns its cursor once
// the insert has committed; every node's feed then delivers it. An error
// means the message may not have been stored (or, if the connection failed
// during the commit, that it may have been), never that it was.
func (b *Broker) Publish(ctx context.Context, m pubsub.Message) (pubsub.Cursor, error) {
	if b.closed.Load() {
		return "", pubsub.ErrClosed
	}
	args, err := b.prepare(&m)
	if err != nil {
		return "", err
	}
	return b.insert(b.db.QueryRow(ctx, b.sql.publish, args...))
}

// PublishTx publishes m within tx, the caller's transaction: the message
// exists, and subscribers see it, only if tx commits. The returned cursor is
// valid only then. Publishers of a namespace commit one at a time (see the
// package documentation), so from PublishTx until tx ends every other
// publisher of the namespace waits: call it last in the transaction and
// commit soon.
func (b *Broker) PublishTx(ctx context.Context, tx pgx.Tx, m pubsub.Message) (pubsub.Cursor, error) {
	if b.closed.Load() {
		return "", pubsub.ErrClosed
	}
	args, err := b.prepare(&m)
	if err != nil {
		return "", err
	}
	return b.insert(tx.QueryRow(ctx, b.sql.publish, args...))
}

func (b *Broker) insert(row pgx.Row) (pubsub.Cursor, error) {
	var pos int64
	var epoch string
	if err := row.Scan(&pos, &epoch); err != nil {
		return "", fmt.Errorf("pgpubsub: publish: %w", notMigrated(b.n.ns, err))
	}
	return pubsub.MakeCursor(epoch, pubsub.Position{Lo: uint64(pos)}), nil
}

// notice is a message as NOTIFY carries it, after "<pos> <epoch> ".
type notice struct {
	Topic  string            `json:"t"`
	ID     string            `json:"i"`
	Time   int64             `json:"u"` // Unix microseconds
	Header map[string]string `json:"h,omitempty"`
	Data   []byte            `json:"d"`
}

// prepare validates m, sets its ID and time, and returns the arguments of
// the publish function.
func (b *Broker) prepare(m *pubsub.Message) ([]any, error) {
	if err := pubsub.ValidateTopic(m.Topic); err != nil {
		return nil, err
	}
	size := len(m.Data)
	for k, v := range m.Header {
		size += len(k) + len(v)
	}
	if size > b.cfg.MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", pubsub.ErrTooLarge, size, b.cfg.MaxMessageSize)
	}
	now := time.Now().Round(time.Microsecond) // what timestamptz keeps
	if m.ID == "" {
		m.ID = b.ids.ID(now)
	}
	var header []byte // SQL NULL when empty
	if len(m.Header) > 0 {
		var err error
		if header, err = json.Marshal(m.Header); err != nil {
			return nil, err
		}
	}
	var payload *string // SQL NULL: notify the position only
	if size < maxPayload {
		p, err := json.Marshal(notice{Topic: m.Topic, ID: m.ID, Time: now.UnixMicro(), Header: m.Header, Data: m.Data})
		if err != nil {
			return nil, err
		}
		if len(p) <= maxPayload {
			s := string(p)
			payload = &s
		}
	}
	return []any{m.Topic, m.ID, now, header, m.Data, payload}, nil
}

// Subscribe opens a subscription on this node. See pubsub.Subscriber.
func (b *Broker) Subscribe(ctx context.Context, pattern string, opts ...pubsub.SubscribeOption) (pubsub.Subscription, error) {
	if b.closed.Load() {
		return nil, pubsub.ErrClosed
	}
	return b.relay.Subscribe(ctx, pattern, opts...)
}

// Close stops the feed and the cleanup, waits for them, and ends every
// subscription of this node (readers get pubsub.ErrClosed). It closes the
// pool only if Connect opened it. Close is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.cancel()
		b.wg.Wait()
		b.closeErr = b.relay.Close()
		if b.ownsDB {
			b.db.Close()
		}
	})
	return b.closeErr
}

// head is the relay's HeadFunc: the newest committed position.
func (b *Broker) head(ctx context.Context) (pubsub.Position, error) {
	var pos int64
	if err := b.db.QueryRow(ctx, b.sql.head).Scan(&pos); err != nil {
		return pubsub.Position{}, notMigrated(b.n.ns, err)
	}
	return pubsub.Position{Lo: uint64(pos)}, nil
}

// history is the relay's HistoryFunc.
func (b *Broker) history(ctx context.Context, pattern string, after pubsub.Position, limit int) ([]pubsub.Message, error) {
	query, filter := b.sql.readTopic, pattern
	if strings.ContainsAny(pattern, "*>") {
		query, filter = b.sql.readPattern, patternRegexp(pattern)
	}
	epoch, wm, msgs, err := b.read(ctx, b.db, query, after.Lo, limit, filter)
	if err != nil {
		return nil, err
	}
	if epoch != b.relay.Epoch() {
		return nil, &pubsub.GapError{Reason: "epoch"}
	}
	if after.Lo != 0 && after.Lo < wm {
		return nil, &pubsub.GapError{Reason: "trimmed"}
	}
	return msgs, nil
}

// querier is a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// read runs one of the read queries.
func (b *Broker) read(ctx context.Context, q querier, query string, after uint64, limit int, filter ...any) (epoch string, wm uint64, msgs []pubsub.Message, err error) {
	args := append([]any{int64(after), limit}, filter...)
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return "", 0, nil, notMigrated(b.n.ns, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			w      int64
			pos    *int64
			topic  *string
			id     *string
			at     *time.Time
			header map[string]string
			data   []byte
		)
		if err := rows.Scan(&epoch, &w, &pos, &topic, &id, &at, &header, &data); err != nil {
			return "", 0, nil, err
		}
		wm = uint64(w)
		if pos == nil {
			continue // no message, only the metadata
		}
		msgs = append(msgs, pubsub.Message{
			Topic: *topic, ID: *id, Time: *at, Header: header, Data: data,
			Cursor: pubsub.MakeCursor(epoch, pubsub.Position{Lo: uint64(*pos)}),
		})
	}
	if err := rows.Err(); err != nil {
		return "", 0, nil, notMigrated(b.n.ns, err)
	}
	return epoch, wm, msgs, nil
}

// patternRegexp translates a subject pattern to a PostgreSQL regular
// expression: "*" one token, ">" one or more.
func patternRegexp(pattern string) string {
	toks := strings.Split(pattern, ".")
	for i, t := range toks {
		switch t {
		case "*":
			toks[i] = `[^.]+`
		case ">":
			toks[i] = `.+`
		default:
			toks[i] = regexp.QuoteMeta(t)
		}
	}
	return "^" + strings.Join(toks, `\.`) + "$"
}

// Cleanup deletes what retention no longer keeps: messages beyond the
// namespace's MaxMessages newest, and those older than MaxAge. It deletes
// in transactions of at most CleanupBatch rows, takes no lock a publisher
// waits for, and returns at once (0, nil) when another node is cleaning
// the namespace. The nodes' cleanup loops call it every CleanupInterval.
func (b *Broker) Cleanup(ctx context.Context) (deleted int64, err error) {
	s := b.n.schema
	cutSQL := `SELECT CASE WHEN c.cut IS NOT NULL THEN least(c.cut, c.batch) END FROM (SELECT
	greatest(
		(SELECT pos FROM ` + s + `.messages ORDER BY pos DESC OFFSET (SELECT max_messages FROM ` + s + `.meta) LIMIT 1),
		(SELECT max(o.pos) FROM (SELECT pos, published_at FROM ` + s + `.messages ORDER BY pos LIMIT $1) o, ` + s + `.meta
			WHERE meta.max_age_us > 0 AND o.published_at < now() - meta.max_age_us * interval '1 microsecond')) AS cut,
	(SELECT max(b.pos) FROM (SELECT pos FROM ` + s + `.messages ORDER BY pos LIMIT $1) b) AS batch) c`
	deleteSQL := `WITH d AS (DELETE FROM ` + s + `.messages WHERE pos <= $1 RETURNING pos)
UPDATE ` + s + `.meta SET trimmed = greatest(trimmed, (SELECT max(pos) FROM d)) RETURNING (SELECT count(*) FROM d)`
	for {
		var n int64
		err := pgx.BeginFunc(ctx, b.db, func(tx pgx.Tx) error {
			var mine bool
			if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", b.n.trimKey).Scan(&mine); err != nil || !mine {
				return err
			}
			var cut *int64
			if err := tx.QueryRow(ctx, cutSQL, CleanupBatch).Scan(&cut); err != nil || cut == nil {
				return err
			}
			return tx.QueryRow(ctx, deleteSQL, *cut).Scan(&n)
		})
		deleted += n
		if err != nil {
			return deleted, notMigrated(b.n.ns, err)
		}
		if n < CleanupBatch {
			return deleted, nil
		}
	}
}

func (b *Broker) cleanupLoop(ctx context.Context) {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = b.Cleanup(ctx) // a failure is retried at the next tick
		}
	}
}

var errBadNotice = errors.New("pgpubsub: malformed notification")

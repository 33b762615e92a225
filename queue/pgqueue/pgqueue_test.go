package pgqueue_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
)

// testCtx bounds a test only so that a broken backend fails instead of
// hanging.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newQueue(t *testing.T, b queue.Backend) *queue.Queue {
	t.Helper()
	q, err := queue.New(b, "q-"+strings.ToLower(randText()))
	require.NoError(t, err)
	return q
}

func randText() string { return strconv.FormatInt(time.Now().UnixNano(), 36) }

// count returns how many rows of the namespace's jobs table are in state.
func count(t *testing.T, db *pgxpool.Pool, ns, where string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(context.Background(), "SELECT count(*) FROM "+ns+".jobs WHERE "+where).Scan(&n))
	return n
}

func TestMigrate(t *testing.T) {
	ctx := testCtx(t)
	db := newPool(t, postgresURL(t))
	t.Run("is idempotent and keeps the messages", func(t *testing.T) {
		ns := migrate(t, db)
		b := open(t, db, pgqueue.Config{Namespace: ns})
		q := newQueue(t, b)
		_, err := q.Enqueue(ctx, queue.Message{Body: []byte("kept")})
		require.NoError(t, err)
		var wg sync.WaitGroup
		for range 3 { // from several nodes at once
			wg.Go(func() { assert.NoError(t, pgqueue.Migrate(ctx, db, ns)) })
		}
		wg.Wait()
		ds, err := q.Receive(ctx, queue.ReceiveOptions{})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		assert.Equal(t, "kept", string(ds[0].Body))
	})
	t.Run("New on a namespace never migrated fails with ErrNotMigrated", func(t *testing.T) {
		_, err := pgqueue.New(ctx, db, pgqueue.Config{Namespace: "pgqueue_never_migrated"})
		assert.ErrorIs(t, err, pgqueue.ErrNotMigrated)
	})
	t.Run("an invalid namespace is refused", func(t *testing.T) {
		for _, ns := range []string{"Upper", "with-dash", "1digit", strings.Repeat("a", 49)} {
			assert.Error(t, pgqueue.Migrate(ctx, db, ns), ns)
		}
	})
}

func TestTransactions(t *testing.T) {
	ctx := testCtx(t)
	db := newPool(t, postgresURL(t))
	b := open(t, db, pgqueue.Config{Namespace: migrate(t, db)})
	t.Run("an enqueue in a transaction that commits is delivered, one that rolls back is not", func(t *testing.T) {
		q := newQueue(t, b)
		for _, commit := range []bool{false, true} {
			tx, err := db.Begin(ctx)
			require.NoError(t, err)
			res, err := b.EnqueueTx(ctx, tx, q.Name(), []queue.Message{{Body: []byte(fmt.Sprint(commit))}})
			require.NoError(t, err)
			require.Len(t, res, 1)
			ds, err := q.Receive(ctx, queue.ReceiveOptions{})
			require.NoError(t, err)
			assert.Empty(t, ds, "invisible before the commit")
			if commit {
				require.NoError(t, tx.Commit(ctx))
			} else {
				require.NoError(t, tx.Rollback(ctx))
			}
		}
		ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 10})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		assert.Equal(t, "true", string(ds[0].Body))
	})
	t.Run("a waiting receive is woken when the enqueueing transaction commits", func(t *testing.T) {
		q := newQueue(t, b)
		got := make(chan []queue.Delivery, 1)
		go func() {
			ds, _ := q.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
			got <- ds
		}()
		require.NoError(t, pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			_, err := b.EnqueueTx(ctx, tx, q.Name(), []queue.Message{{Body: []byte("x")}})
			return err
		}))
		select {
		case ds := <-got:
			require.Len(t, ds, 1)
		case <-ctx.Done():
			t.Fatal("the commit did not wake the receive")
		}
	})
	t.Run("EnqueueTx checks its arguments", func(t *testing.T) {
		tx, err := db.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		for name, msgs := range map[string][]queue.Message{
			"bad/name": {{}},
			"q":        {{Priority: 99}},
			"q2":       nil,
		} {
			_, err := b.EnqueueTx(ctx, tx, name, msgs)
			assert.ErrorIs(t, err, queue.ErrInvalid, "%s %+v", name, msgs)
		}
	})
	t.Run("an ack in a transaction that rolls back leaves the lease, one that commits deletes", func(t *testing.T) {
		q := newQueue(t, b)
		_, err := q.Enqueue(ctx, queue.Message{Body: []byte("x")})
		require.NoError(t, err)
		ds, err := q.Receive(ctx, queue.ReceiveOptions{})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		tx, err := db.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, b.AckTx(ctx, tx, q.Name(), ds[0].Receipt))
		require.NoError(t, tx.Rollback(ctx))
		st, err := q.Stats(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, st.InFlight, "still leased after the rollback")

		require.NoError(t, pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if err := b.AckTx(ctx, tx, q.Name(), ds[0].Receipt); err != nil {
				return err
			}
			var sc string
			require.NoError(t, tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc))
			assert.Equal(t, "on", sc, "AckTx leaves the durability of the caller's commit alone")
			return nil
		}))
		st, err = q.Stats(ctx)
		require.NoError(t, err)
		assert.Equal(t, queue.Stats{Processed: 1}, st)
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return b.AckTx(ctx, tx, q.Name(), ds[0].Receipt) })
		assert.ErrorIs(t, err, queue.ErrStaleReceipt)
	})
}

func TestRetention(t *testing.T) {
	ctx := testCtx(t)
	db := newPool(t, postgresURL(t))
	ns := migrate(t, db)
	// Retentions of a microsecond: what they keep is gone by the time
	// Cleanup runs, so nothing waits.
	b := open(t, db, pgqueue.Config{Namespace: ns, Retention: time.Microsecond, DeadRetention: time.Microsecond,
		DedupWindow: time.Microsecond, CleanupInterval: -1})
	q := newQueue(t, b)
	_, err := q.EnqueueBatch(ctx, []queue.Message{{Body: []byte("done")}, {Body: []byte("dead")}, {Body: []byte("k"), DedupKey: "k"}})
	require.NoError(t, err)
	ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 3})
	require.NoError(t, err)
	require.Len(t, ds, 3)
	require.NoError(t, q.Ack(ctx, ds[0].Receipt))
	require.NoError(t, q.DeadLetter(ctx, ds[1].Receipt, "bad"))
	require.NoError(t, q.Ack(ctx, ds[2].Receipt))
	assert.Equal(t, 2, count(t, db, ns, "state = 4"), "acked rows are kept done")
	assert.Equal(t, 1, count(t, db, ns, "state = 3"))

	deleted, err := b.Cleanup(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(4), deleted, "two done rows, one dead letter, one dedup key")
	assert.Equal(t, 0, count(t, db, ns, "true"))
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), st.Processed, "the counters outlive the rows")

	t.Run("without retention an ack deletes the row", func(t *testing.T) {
		b := open(t, db, pgqueue.Config{Namespace: ns, CleanupInterval: -1})
		q := newQueue(t, b)
		_, err := q.Enqueue(ctx, queue.Message{Body: []byte("x")})
		require.NoError(t, err)
		ds, err := q.Receive(ctx, queue.ReceiveOptions{})
		require.NoError(t, err)
		require.NoError(t, q.Ack(ctx, ds[0].Receipt))
		assert.Equal(t, 0, count(t, db, ns, "queue = '"+q.Name()+"'"))
	})
}

// Ten thousand messages ahead of the one received, and a hundred
// thousand finished rows beside it: receive reads the ready index's head
// and nothing else (the plan is checked, not the time).
func TestReceiveUsesTheReadyIndex(t *testing.T) {
	ctx := testCtx(t)
	db := newPool(t, postgresURL(t))
	ns := migrate(t, db)
	_, err := db.Exec(ctx, `INSERT INTO `+ns+`.jobs (queue, state, seq, visible_at, enqueued_at, queued_at, finished_at, body)
		SELECT 'big', CASE WHEN g % 10 = 0 THEN 0 ELSE 4 END, g, now(), now(), now(), now(), '\x00' FROM generate_series(1, 100000) g`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, "ANALYZE "+ns+".jobs")
	require.NoError(t, err)
	rows, err := db.Query(ctx, `EXPLAIN SELECT id FROM `+ns+`.jobs WHERE queue = 'big' AND state = 0
		ORDER BY priority DESC, seq LIMIT 10 FOR UPDATE SKIP LOCKED`)
	require.NoError(t, err)
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	assert.Contains(t, strings.Join(plan, "\n"), "jobs_ready", "plan:\n%s", strings.Join(plan, "\n"))
}

func TestAcrossNodes(t *testing.T) {
	ctx := testCtx(t)
	dbURL := postgresURL(t)
	dbA, dbB := newPool(t, dbURL), newPool(t, dbURL)
	ns := migrate(t, dbA)
	tests := []struct {
		name string
		cfg  pgqueue.Config
	}{
		// A poll interval far beyond the test: only the notification
		// can wake the receiver on the other node.
		{"LISTEN wakes a receiver on another node", pgqueue.Config{Namespace: ns, PollInterval: time.Hour}},
		// The fallback for poolers that break LISTEN.
		{"without LISTEN a receiver on another node finds it by polling", pgqueue.Config{Namespace: ns, NoListen: true, PollInterval: 20 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := open(t, dbA, pgqueue.Config{Namespace: ns})
			b := open(t, dbB, tt.cfg)
			qa := newQueue(t, a)
			qb, err := queue.New(b, qa.Name())
			require.NoError(t, err)
			got := make(chan []queue.Delivery, 1)
			go func() {
				ds, err := qb.Receive(ctx, queue.ReceiveOptions{Wait: queue.MaxWait})
				assert.NoError(t, err)
				got <- ds
			}()
			_, err = qa.Enqueue(ctx, queue.Message{Body: []byte("from a")})
			require.NoError(t, err)
			select {
			case ds := <-got:
				require.Len(t, ds, 1)
				assert.Equal(t, "from a", string(ds[0].Body))
			case <-ctx.Done():
				t.Fatal("the receiver on node b was not woken")
			}
		})
	}
}

func TestCloseOwnsWhatConnectOpened(t *testing.T) {
	ctx := testCtx(t)
	dbURL := postgresURL(t)
	ns := migrate(t, newPool(t, dbURL))
	b, err := pgqueue.Connect(ctx, dbURL, pgqueue.Config{Namespace: ns})
	require.NoError(t, err)
	q := newQueue(t, b)
	_, err = q.Enqueue(ctx, queue.Message{Body: []byte("x")})
	require.NoError(t, err)
	ds, err := q.Receive(ctx, queue.ReceiveOptions{})
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "idempotent")
	for name, err := range map[string]error{
		"ack":     q.Ack(ctx, ds[0].Receipt),
		"extend":  q.Extend(ctx, ds[0].Receipt, time.Second),
		"pause":   q.Pause(ctx),
		"receive": func() error { _, err := q.Receive(ctx, queue.ReceiveOptions{}); return err }(),
	} {
		assert.ErrorIs(t, err, queue.ErrClosed, name)
	}
	// goleak in TestMain checks that the listener, the settler, the
	// cleanup and the pool's goroutines are gone.
}

// logged is a slog handler that reports each record's message.
type logged struct{ msgs chan string }

func (l logged) Enabled(context.Context, slog.Level) bool { return true }
func (l logged) Handle(_ context.Context, r slog.Record) error {
	select {
	case l.msgs <- r.Message:
	default:
	}
	return nil
}
func (l logged) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logged) WithGroup(string) slog.Handler      { return l }

// The engine goes away while a Worker runs and comes back (Pause, then
// Resume), or every connection to it is reset at once (Cut): the worker
// keeps running, the backend reconnects (its LISTEN connection too: the
// poll interval is longer than the test), and every enqueue that was
// acknowledged is processed.
func TestEngineGoesAwayAndComesBack(t *testing.T) {
	for _, fault := range []string{"pause", "cut"} {
		t.Run(fault, func(t *testing.T) { testFault(t, fault) })
	}
}

func testFault(t *testing.T, fault string) {
	ctx := testCtx(t)
	dbURL := postgresURL(t)
	direct := newPool(t, dbURL)
	ns := migrate(t, direct)
	proxy, proxiedURL := proxied(t, dbURL)
	through := newPool(t, proxiedURL)
	consumer := open(t, through, pgqueue.Config{Namespace: ns, PollInterval: time.Hour, ReconnectMax: 200 * time.Millisecond})
	producer := open(t, direct, pgqueue.Config{Namespace: ns})
	q := newQueue(t, producer)
	cq, err := queue.New(consumer, q.Name())
	require.NoError(t, err)

	seen := map[string]bool{} // owned by the test goroutine
	processed := make(chan string, 1000)
	logs := logged{msgs: make(chan string, 100)}
	w := queue.NewWorker(cq, func(_ context.Context, d queue.Delivery) error {
		processed <- string(d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 4, Lease: 5 * time.Second, Wait: queue.MaxWait, Logger: slog.New(logs)})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()

	var acknowledged []string
	enqueue := func(b queue.Backend, body string) bool {
		_, err := b.Enqueue(ctx, q.Name(), []queue.Message{{Body: []byte(body)}})
		if err == nil {
			acknowledged = append(acknowledged, body)
		}
		return err == nil
	}
	// waitProcessed waits until every acknowledged enqueue was processed
	// (a message whose ack was cut may come twice: at least once).
	waitProcessed := func() {
		t.Helper()
		for _, body := range acknowledged {
			for !seen[body] {
				select {
				case got := <-processed:
					seen[got] = true
				case <-ctx.Done():
					t.Fatalf("acknowledged enqueue %q was not processed; seen %v", body, seen)
				}
			}
		}
	}
	for i := range 10 {
		require.True(t, enqueue(producer, "before-"+strconv.Itoa(i)))
	}
	waitProcessed()

	if fault == "pause" {
		proxy.Pause() // the engine is gone for the consumer
		// The worker notices: its receive fails (it logs and backs off).
		for msg := range logs.msgs {
			if strings.Contains(msg, "receive failed") {
				break
			}
		}
		_, err = consumer.Enqueue(ctx, q.Name(), []queue.Message{{Body: []byte("through-the-cut")}})
		assert.Error(t, err, "an enqueue through the cut path is refused, not acknowledged")
	} else {
		proxy.Cut() // every connection reset; new ones are accepted
	}
	for i := range 10 {
		require.True(t, enqueue(producer, "during-"+strconv.Itoa(i)), "the producer's path is up")
	}
	proxy.Resume()
	waitProcessed()
	// Back and listening: an enqueue on the other node wakes the worker
	// through its LISTEN connection (its poll interval is an hour).
	for i := range 10 {
		require.True(t, enqueue(producer, "after-"+strconv.Itoa(i)))
	}
	waitProcessed()
	require.NoError(t, w.Shutdown(ctx))
	require.NoError(t, <-ran)
	assert.Len(t, acknowledged, 30)
}

func TestListDeadPages(t *testing.T) {
	ctx := testCtx(t)
	db := newPool(t, postgresURL(t))
	b := open(t, db, pgqueue.Config{Namespace: migrate(t, db)})
	q := newQueue(t, b)
	_, err := q.EnqueueBatch(ctx, []queue.Message{{Body: []byte("0")}, {Body: []byte("1")}, {Body: []byte("2")}, {Body: []byte("3")}})
	require.NoError(t, err)
	ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 4})
	require.NoError(t, err)
	require.Len(t, ds, 4)
	for _, d := range ds {
		require.NoError(t, q.DeadLetter(ctx, d.Receipt, "x"))
	}
	tests := []struct {
		limit int
		pages []int // sizes; the last page has no next cursor
	}{
		{limit: 1, pages: []int{1, 1, 1, 1}},
		{limit: 2, pages: []int{2, 2}},
		{limit: 3, pages: []int{3, 1}},
		{limit: 4, pages: []int{4}},
		{limit: 10, pages: []int{4}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("limit %d", tt.limit), func(t *testing.T) {
			cursor := ""
			var got []int
			var bodies []string
			for range 10 {
				page, next, err := q.Dead(ctx, cursor, tt.limit)
				require.NoError(t, err)
				got = append(got, len(page))
				for _, m := range page {
					bodies = append(bodies, string(m.Body))
				}
				if next == "" {
					break
				}
				cursor = next
			}
			assert.Equal(t, tt.pages, got, "page sizes")
			assert.Equal(t, []string{"0", "1", "2", "3"}, bodies, "oldest death first, each once")
		})
	}
	_, _, err = q.Dead(ctx, "not-a-cursor", 1)
	assert.ErrorIs(t, err, queue.ErrInvalid)
}

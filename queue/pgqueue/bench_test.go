package pgqueue_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
)

// The benchmarks move 128-byte no-op jobs over loopback, as the issue
// measures River and asynq, and report jobs/s (and latency percentiles)
// beside ns/op, where one op is one job. Beside each, "bare" is the
// engine's ceiling measured with the bare client in the same run.
//
//	SWITCHBOARD_POSTGRES_URL=... go test -run '^$' -bench . -benchmem -benchtime 20000x ./queue/pgqueue

var body128 = make([]byte, 128)

func benchBackend(b *testing.B, cfg pgqueue.Config) (*pgxpool.Pool, *pgqueue.Backend, *queue.Queue) {
	db := newPool(b, postgresURL(b))
	cfg.Namespace = migrate(b, db)
	be := open(b, db, cfg)
	q, err := queue.New(be, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return db, be, q
}

// bareTable makes the bare client's table in the namespace of db.
func bareTable(b *testing.B) (*pgxpool.Pool, string) {
	db := newPool(b, postgresURL(b))
	ns := migrate(b, db)
	table := ns + ".bare"
	if _, err := db.Exec(context.Background(), "CREATE TABLE "+table+" (id bigserial PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	return db, table
}

func rate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}

func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	b.Run("one/pgqueue", func(b *testing.B) {
		_, _, q := benchBackend(b, pgqueue.Config{})
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if _, err := q.Enqueue(ctx, queue.Message{Body: body128}); err != nil {
				b.Fatal(err)
			}
		}
		rate(b, start)
	})
	b.Run("one/bare-insert", func(b *testing.B) {
		db, table := bareTable(b)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if _, err := db.Exec(ctx, "INSERT INTO "+table+" (body) VALUES ($1)", body128); err != nil {
				b.Fatal(err)
			}
		}
		rate(b, start)
	})
	const batch = 100
	b.Run("batch=100/pgqueue", func(b *testing.B) {
		_, _, q := benchBackend(b, pgqueue.Config{})
		msgs := make([]queue.Message, batch)
		for i := range msgs {
			msgs[i] = queue.Message{Body: body128}
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += batch {
			if _, err := q.EnqueueBatch(ctx, msgs[:min(batch, b.N-i)]); err != nil {
				b.Fatal(err)
			}
		}
		rate(b, start)
	})
	b.Run("batch=100/bare-insert", func(b *testing.B) {
		db, table := bareTable(b)
		bodies := make([][]byte, batch)
		for i := range bodies {
			bodies[i] = body128
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += batch {
			if _, err := db.Exec(ctx, "INSERT INTO "+table+" (body) SELECT unnest($1::bytea[])", bodies[:min(batch, b.N-i)]); err != nil {
				b.Fatal(err)
			}
		}
		rate(b, start)
	})
}

// acks wraps a backend to report acks, so the benchmark ends on the last
// one without polling.
type acks struct {
	queue.Backend
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (a *acks) Ack(ctx context.Context, q string, r queue.Receipt) error {
	err := a.Backend.Ack(ctx, q, r)
	if err == nil && a.n.Add(1) == a.want {
		close(a.done)
	}
	return err
}

func (a *acks) AckBatch(ctx context.Context, q string, rs []queue.Receipt) []error {
	errs := a.Backend.(queue.BatchAcker).AckBatch(ctx, q, rs)
	n := int64(len(rs))
	for _, err := range errs {
		if err != nil {
			n--
		}
	}
	if a.n.Add(n) == a.want {
		close(a.done)
	}
	return errs
}

func (a *acks) PrefetchPerHandler() int {
	return a.Backend.(queue.PrefetchAdvisor).PrefetchPerHandler()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fill enqueues n jobs in batches.
func fill(b *testing.B, q *queue.Queue, n int) {
	msgs := make([]queue.Message, queue.MaxBatch)
	for i := range msgs {
		msgs[i] = queue.Message{Body: body128}
	}
	for i := 0; i < n; i += len(msgs) {
		if _, err := q.EnqueueBatch(context.Background(), msgs[:min(len(msgs), n-i)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProcess: b.N pre-enqueued no-op jobs, processed by a Worker
// with 10 handlers, acks included. Beside it, the bare client: 10
// connections each in a loop of one-row DELETE ... FOR UPDATE SKIP LOCKED
// (no lease, no retry, no dead letter).
func BenchmarkProcess(b *testing.B) {
	const workers = 10
	b.Run("pgqueue", func(b *testing.B) {
		_, be, q := benchBackend(b, pgqueue.Config{})
		fill(b, q, b.N)
		a := &acks{Backend: be, want: int64(b.N), done: make(chan struct{})}
		wq, err := queue.New(a, q.Name())
		if err != nil {
			b.Fatal(err)
		}
		w := queue.NewWorker(wq, func(context.Context, queue.Delivery) error { return nil },
			queue.WorkerOptions{Concurrency: workers, Logger: quiet()})
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		ran := make(chan error, 1)
		go func() { ran <- w.Run(context.Background()) }()
		<-a.done
		rate(b, start)
		b.StopTimer()
		if err := w.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := <-ran; err != nil {
			b.Fatal(err)
		}
	})
	// The same work through the queue API without the Worker: 10
	// goroutines, each a loop of Receive (up to 10) and Ack.
	b.Run("pgqueue-10-receive-loops", func(b *testing.B) {
		_, _, q := benchBackend(b, pgqueue.Config{})
		fill(b, q, b.N)
		ctx := context.Background()
		var left atomic.Int64
		left.Store(int64(b.N))
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for left.Load() > 0 {
					ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 10})
					if err != nil {
						b.Error(err)
						return
					}
					for _, d := range ds {
						if err := q.Ack(ctx, d.Receipt); err != nil {
							b.Error(err)
							return
						}
					}
					left.Add(-int64(len(ds)))
				}
			})
		}
		wg.Wait()
		rate(b, start)
	})
	for _, sc := range []string{"on", "off"} {
		b.Run("bare-skip-locked-delete/synchronous_commit="+sc, func(b *testing.B) { bareDelete(b, workers, sc) })
	}
}

// bareDelete is the bare client's loop, its commits with synchronous_commit
// syncCommit ("off" is what pgqueue's consumers use by default).
func bareDelete(b *testing.B, workers int, syncCommit string) {
	{
		db, table := bareTable(b)
		ctx := context.Background()
		bodies := make([][]byte, 1000)
		for i := range bodies {
			bodies[i] = body128
		}
		for i := 0; i < b.N; i += len(bodies) {
			if _, err := db.Exec(ctx, "INSERT INTO "+table+" (body) SELECT unnest($1::bytea[])", bodies[:min(len(bodies), b.N-i)]); err != nil {
				b.Fatal(err)
			}
		}
		del := "WITH cfg AS (SELECT set_config('synchronous_commit', '" + syncCommit + "', true)) DELETE FROM " + table +
			" WHERE id = (SELECT id FROM " + table + " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) AND EXISTS (SELECT FROM cfg) RETURNING body"
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					var body []byte
					err := db.QueryRow(ctx, del).Scan(&body)
					if err == pgx.ErrNoRows {
						return
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		rate(b, start)
	}
}

// stamp returns a 128-byte body whose first 8 bytes are the time now.
func stamp() []byte {
	body := make([]byte, 128)
	binary.BigEndian.PutUint64(body, uint64(time.Now().UnixNano()))
	return body
}

func since(body []byte) time.Duration {
	return time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(body)))
}

func percentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkLatency: one producer enqueues b.N jobs at a steady 500 jobs/s,
// a Worker with 10 handlers and default settings takes them; the metric is
// enqueue→handler latency. Beside it, the bare client: INSERT + NOTIFY,
// and one LISTEN connection that deletes with SKIP LOCKED when notified.
func BenchmarkLatency(b *testing.B) {
	const perSecond = 500
	ctx := context.Background()
	b.Run("pgqueue", func(b *testing.B) {
		_, be, q := benchBackend(b, pgqueue.Config{})
		a := &acks{Backend: be, want: int64(b.N), done: make(chan struct{})}
		wq, _ := queue.New(a, q.Name())
		lat := make(chan time.Duration, b.N)
		w := queue.NewWorker(wq, func(_ context.Context, d queue.Delivery) error {
			lat <- since(d.Body)
			return nil
		}, queue.WorkerOptions{Concurrency: 10, Logger: quiet()})
		ran := make(chan error, 1)
		go func() { ran <- w.Run(ctx) }()
		b.ReportAllocs()
		b.ResetTimer()
		tick := time.NewTicker(time.Second / perSecond)
		defer tick.Stop()
		for range b.N {
			<-tick.C
			if _, err := q.Enqueue(ctx, queue.Message{Body: stamp()}); err != nil {
				b.Fatal(err)
			}
		}
		<-a.done
		b.StopTimer()
		_ = w.Shutdown(ctx)
		<-ran
		close(lat)
		var all []time.Duration
		for d := range lat {
			all = append(all, d)
		}
		percentiles(b, all)
	})
	b.Run("bare-insert-notify-listen", func(b *testing.B) {
		db, table := bareTable(b)
		channel := "bare_" + table[:len(table)-len(".bare")]
		conn, err := pgx.ConnectConfig(ctx, db.Config().ConnConfig.Copy())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
			b.Fatal(err)
		}
		del := "DELETE FROM " + table + " WHERE id = (SELECT id FROM " + table + " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING body"
		all := make([]time.Duration, 0, b.N)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for len(all) < b.N {
				if _, err := conn.WaitForNotification(ctx); err != nil {
					b.Error(err)
					return
				}
				for {
					var body []byte
					if err := conn.QueryRow(ctx, del).Scan(&body); err != nil {
						break
					}
					all = append(all, since(body))
				}
			}
		}()
		ins := "WITH i AS (INSERT INTO " + table + " (body) VALUES ($1) RETURNING id) SELECT pg_notify('" + channel + "', '') FROM i"
		b.ReportAllocs()
		b.ResetTimer()
		tick := time.NewTicker(time.Second / perSecond)
		defer tick.Stop()
		for range b.N {
			<-tick.C
			if _, err := db.Exec(ctx, ins, stamp()); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		b.StopTimer()
		percentiles(b, all)
	})
}

// BenchmarkDeepTable: one consumer receives 10 at a time and acks each,
// on a namespace whose table also holds a million other rows, every state
// of this queue and another (ready ones behind the jobs taken, delayed,
// leased, dead, done), vacuumed before the timer starts. Receive reads the
// head of the ready index and the reaper an empty range of the timed one,
// so the rate does not fall with the table's size.
func BenchmarkDeepTable(b *testing.B) {
	for _, rows := range []int{0, 1_000_000} {
		b.Run("rows="+strconv.Itoa(rows), func(b *testing.B) {
			db, be, q := benchBackend(b, pgqueue.Config{CleanupInterval: -1})
			ctx := context.Background()
			ns := be.Namespace()
			if rows > 0 {
				_, err := db.Exec(ctx, `INSERT INTO `+ns+`.jobs (queue, state, seq, visible_at, enqueued_at, queued_at, finished_at, body)
	SELECT CASE WHEN g % 2 = 0 THEN 'bench' ELSE 'other' END, (g % 5)::smallint, g + 1000000000, now() + interval '1 hour', now(), now(), now(), '\x00'
	FROM generate_series(1, $1) g`, rows)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := db.Exec(ctx, "VACUUM ANALYZE "+ns+".jobs"); err != nil {
					b.Fatal(err)
				}
			}
			fill(b, q, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; {
				ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 10})
				if err != nil {
					b.Fatal(err)
				}
				for _, d := range ds {
					if err := q.Ack(ctx, d.Receipt); err != nil {
						b.Fatal(err)
					}
				}
				done += len(ds)
			}
			rate(b, start)
		})
	}
}

package redisqueue_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// The benchmarks of the issue, on loopback, each beside the bare client's
// ceiling in the same function (a Redis list: LPUSH to enqueue, BRPOP to
// take, no leases, no acks, no retries, no dead letters):
//
//   - Enqueue: 20,000 jobs of 128 bytes, one at a time and in batches of
//     100, from one producer;
//   - Process: 20,000 pre-enqueued no-op jobs taken by a Worker with 10
//     handlers, acks included (bare: 10 goroutines looping on BRPOP);
//   - Latency: enqueue to handler at a steady 500 jobs/s, with the
//     Worker's defaults (bare: LPUSH at that rate, 10 goroutines on BRPOP).
//
// One op is the whole run of 20,000 jobs (or 2,000 for Latency); jobs/s,
// p50-µs and p99-µs are the figures to read:
//
//	SWITCHBOARD_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchmem -benchtime 3x ./queue/redisqueue/
const (
	benchJobs    = 20_000
	benchBody    = 128
	latencyJobs  = 2_000
	latencyEvery = 2 * time.Millisecond // 500 jobs/s
)

func benchQueue(b *testing.B) (*queue.Queue, *redis.Client) {
	client := newClient(b)
	be := newBackend(b, client, namespace(b), func(o *redisqueue.Options) { o.MaxDepth = 10 * benchJobs })
	q, err := queue.New(be, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return q, client
}

func reportJobs(b *testing.B, jobs int, elapsed time.Duration) {
	b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
}

func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	body := make([]byte, benchBody)
	b.Run("one/redisqueue", func(b *testing.B) {
		q, _ := benchQueue(b)
		b.ReportAllocs()
		var elapsed time.Duration
		for b.Loop() {
			start := time.Now()
			for range benchJobs {
				if _, err := q.Enqueue(ctx, queue.Message{Body: body}); err != nil {
					b.Fatal(err)
				}
			}
			elapsed += time.Since(start)
			b.StopTimer()
			drain(b, q)
			b.StartTimer()
		}
		reportJobs(b, b.N*benchJobs, elapsed)
	})
	b.Run("one/bare-lpush", func(b *testing.B) {
		client, key := newClient(b), bareKey(b)
		b.ReportAllocs()
		var elapsed time.Duration
		for b.Loop() {
			start := time.Now()
			for range benchJobs {
				if err := client.LPush(ctx, key, body).Err(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed += time.Since(start)
			b.StopTimer()
			client.Del(ctx, key)
			b.StartTimer()
		}
		reportJobs(b, b.N*benchJobs, elapsed)
	})
	b.Run("batch=100/redisqueue", func(b *testing.B) {
		q, _ := benchQueue(b)
		batch := make([]queue.Message, 100)
		for i := range batch {
			batch[i] = queue.Message{Body: body}
		}
		b.ReportAllocs()
		var elapsed time.Duration
		for b.Loop() {
			start := time.Now()
			for i := 0; i < benchJobs; i += len(batch) {
				if _, err := q.EnqueueBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			elapsed += time.Since(start)
			b.StopTimer()
			drain(b, q)
			b.StartTimer()
		}
		reportJobs(b, b.N*benchJobs, elapsed)
	})
	b.Run("batch=100/bare-lpush", func(b *testing.B) {
		client, key := newClient(b), bareKey(b)
		batch := make([]any, 100)
		for i := range batch {
			batch[i] = body
		}
		b.ReportAllocs()
		var elapsed time.Duration
		for b.Loop() {
			start := time.Now()
			for i := 0; i < benchJobs; i += len(batch) {
				if err := client.LPush(ctx, key, batch...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed += time.Since(start)
			b.StopTimer()
			client.Del(ctx, key)
			b.StartTimer()
		}
		reportJobs(b, b.N*benchJobs, elapsed)
	})
}

// bareKey returns a list key of its own for b, deleted when b ends.
func bareKey(b *testing.B) string {
	key := "{" + namespace(b) + "}:bare"
	return key
}

// fill enqueues n 128-byte jobs in batches of 1000 (bodies carry the time
// they were made, for the latency benchmark).
func fill(b *testing.B, q *queue.Queue, n int) {
	batch := make([]queue.Message, 1000)
	for i := range batch {
		batch[i] = queue.Message{Body: make([]byte, benchBody)}
	}
	for i := 0; i < n; i += len(batch) {
		if _, err := q.EnqueueBatch(context.Background(), batch[:min(len(batch), n-i)]); err != nil {
			b.Fatal(err)
		}
	}
}

// drain acks everything in q.
func drain(b *testing.B, q *queue.Queue) {
	ctx := context.Background()
	for {
		ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: queue.MaxBatch})
		if err != nil {
			b.Fatal(err)
		}
		if len(ds) == 0 {
			return
		}
		for _, d := range ds {
			if err := q.Ack(ctx, d.Receipt); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkProcess(b *testing.B) {
	b.Run("redisqueue/worker=10", func(b *testing.B) {
		q, _ := benchQueue(b)
		b.ReportAllocs()
		var elapsed time.Duration
		for b.Loop() {
			b.StopTimer()
			fill(b, q, benchJobs)
			b.StartTimer()
			var n atomic.Int64
			done := make(chan struct{})
			w := queue.NewWorker(q, func(context.Context, queue.Delivery) error {
				if n.Add(1) == benchJobs {
					close(done)
				}
				return nil
			}, queue.WorkerOptions{Concurrency: 10, Logger: quiet()})
			ran := make(chan error, 1)
			start := time.Now()
			go func() { ran <- w.Run(context.Background()) }()
			<-done
			if err := w.Shutdown(context.Background()); err != nil { // waits for the last acks
				b.Fatal(err)
			}
			elapsed += time.Since(start)
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
		}
		reportJobs(b, b.N*benchJobs, elapsed)
	})
	b.Run("bare-brpop/goroutines=10", func(b *testing.B) {
		client, key := newClient(b), bareKey(b)
		ctx := context.Background()
		body := make([]any, 1000)
		for i := range body {
			body[i] = make([]byte, benchBody)
		}
		b.ReportAllocs()
		var elapsed time.Duration
		for b.Loop() {
			b.StopTimer()
			for i := 0; i < benchJobs; i += len(body) {
				client.LPush(ctx, key, body...)
			}
			b.StartTimer()
			var left atomic.Int64
			left.Store(benchJobs)
			var wg sync.WaitGroup
			start := time.Now()
			for range 10 {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if err := client.BRPop(ctx, time.Second, key).Err(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed += time.Since(start)
		}
		reportJobs(b, b.N*benchJobs, elapsed)
	})
}

func stampBody(buf []byte) []byte {
	binary.LittleEndian.PutUint64(buf, uint64(time.Now().UnixNano()))
	return buf
}

func since(body []byte) time.Duration {
	return time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(body)))
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// steady calls send every latencyEvery, latencyJobs times.
func steady(b *testing.B, send func(body []byte) error) {
	tick := time.NewTicker(latencyEvery)
	defer tick.Stop()
	for range latencyJobs {
		<-tick.C
		if err := send(stampBody(make([]byte, benchBody))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLatency(b *testing.B) {
	b.Run("redisqueue/500-per-s", func(b *testing.B) {
		q, _ := benchQueue(b)
		ctx := context.Background()
		var lat []time.Duration
		for b.Loop() {
			var mu sync.Mutex
			got := make([]time.Duration, 0, latencyJobs)
			done := make(chan struct{})
			w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
				l := since(d.Body)
				mu.Lock()
				got = append(got, l)
				if len(got) == latencyJobs {
					close(done)
				}
				mu.Unlock()
				return nil
			}, queue.WorkerOptions{Logger: quiet()}) // defaults: 10 handlers
			ran := make(chan error, 1)
			go func() { ran <- w.Run(ctx) }()
			steady(b, func(body []byte) error {
				_, err := q.Enqueue(ctx, queue.Message{Body: body})
				return err
			})
			<-done
			if err := w.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
			lat = append(lat, got...)
		}
		reportLatency(b, lat)
	})
	b.Run("bare-lpush-brpop/500-per-s", func(b *testing.B) {
		client, key := newClient(b), bareKey(b)
		ctx := context.Background()
		var lat []time.Duration
		for b.Loop() {
			var mu sync.Mutex
			var left atomic.Int64
			left.Store(latencyJobs)
			var wg sync.WaitGroup
			for range 10 {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						res, err := client.BRPop(ctx, 10*time.Second, key).Result()
						if err != nil {
							b.Error(err)
							return
						}
						l := since([]byte(res[1]))
						mu.Lock()
						lat = append(lat, l)
						mu.Unlock()
					}
				})
			}
			steady(b, func(body []byte) error { return client.LPush(ctx, key, body).Err() })
			wg.Wait()
		}
		reportLatency(b, lat)
	})
}

package queue_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/queue"
)

// The benchmarks move 64-byte messages through the memory backend and
// report msgs/s beside ns/op and allocs/op, where one op is one message
// enqueued and acked.
//
//	go test -run '^$' -bench . -benchmem ./queue
//
// "channel" is the hand-written near-limit baseline: a plain buffered Go
// channel fed by one producer and drained by the same number of goroutines.

var payload = make([]byte, 64)

func newBenchQueue(b *testing.B) (*queue.Memory, *queue.Queue) {
	mem := queue.NewMemory(queue.MemoryOptions{MaxDepth: 10_000_000})
	b.Cleanup(func() { mem.Close() })
	q, err := queue.New(mem, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return mem, q
}

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	b.Run("channel", func(b *testing.B) {
		c := make(chan []byte, b.N)
		b.ReportAllocs()
		start := time.Now()
		for range b.N {
			c <- payload
		}
		reportRate(b, start)
	})
	b.Run("one", func(b *testing.B) {
		_, q := newBenchQueue(b)
		b.ReportAllocs()
		start := time.Now()
		for range b.N {
			if _, err := q.Enqueue(ctx, queue.Message{Body: payload}); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start)
	})
	b.Run("batch=100", func(b *testing.B) {
		_, q := newBenchQueue(b)
		batch := make([]queue.Message, 100)
		for i := range batch {
			batch[i] = queue.Message{Body: payload}
		}
		b.ReportAllocs()
		start := time.Now()
		for i := 0; i < b.N; i += len(batch) {
			if _, err := q.EnqueueBatch(ctx, batch[:min(len(batch), b.N-i)]); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start)
	})
}

// produce enqueues n messages in batches of 100 from one goroutine.
func produce(b *testing.B, q *queue.Queue, n int) {
	batch := make([]queue.Message, 100)
	for i := range batch {
		batch[i] = queue.Message{Body: payload}
	}
	for i := 0; i < n; i += len(batch) {
		if _, err := q.EnqueueBatch(context.Background(), batch[:min(len(batch), n-i)]); err != nil {
			b.Error(err)
			return
		}
	}
}

// BenchmarkReceiveAck is enqueue to ack: one producer enqueues in batches,
// consumers Receive up to 32 and Ack each.
func BenchmarkReceiveAck(b *testing.B) {
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("channel/workers=%d", workers), func(b *testing.B) { benchChannel(b, workers) })
		b.Run(fmt.Sprintf("memory/workers=%d", workers), func(b *testing.B) {
			_, q := newBenchQueue(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var acked atomic.Int64
			done := make(chan struct{})
			var wg sync.WaitGroup
			b.ReportAllocs()
			start := time.Now()
			for range workers {
				wg.Go(func() {
					for {
						ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 32, Wait: time.Minute})
						if err != nil {
							return
						}
						for _, d := range ds {
							if err := q.Ack(ctx, d.Receipt); err != nil {
								b.Error(err)
							}
						}
						if acked.Add(int64(len(ds))) == int64(b.N) {
							close(done)
						}
					}
				})
			}
			produce(b, q, b.N)
			<-done
			reportRate(b, start)
			cancel()
			wg.Wait()
		})
	}
}

func benchChannel(b *testing.B, workers int) {
	c := make(chan []byte, 1024)
	var wg sync.WaitGroup
	var n atomic.Int64
	b.ReportAllocs()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for m := range c {
				if len(m) > 0 {
					n.Add(1)
				}
			}
		})
	}
	for range b.N {
		c <- payload
	}
	close(c)
	wg.Wait()
	reportRate(b, start)
}

// BenchmarkWorker is enqueue to ack through a Worker with a handler that
// does nothing: lease keeping, timeouts and settlement included.
func BenchmarkWorker(b *testing.B) {
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("channel/workers=%d", workers), func(b *testing.B) { benchChannel(b, workers) })
		b.Run(fmt.Sprintf("worker/concurrency=%d", workers), func(b *testing.B) {
			_, q := newBenchQueue(b)
			var handled atomic.Int64
			done := make(chan struct{})
			w := queue.NewWorker(q, func(context.Context, queue.Delivery) error {
				if handled.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			}, queue.WorkerOptions{Concurrency: workers, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			ran := make(chan error, 1)
			b.ReportAllocs()
			start := time.Now()
			go func() { ran <- w.Run(context.Background()) }()
			produce(b, q, b.N)
			<-done
			if err := w.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			reportRate(b, start)
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkLatency measures enqueue to handler at moderate load: a
// producer keeps at most 16 messages outstanding and a Worker with 4
// handlers takes them. It reports the p50 and p99 in microseconds.
func BenchmarkLatency(b *testing.B) {
	_, q := newBenchQueue(b)
	lat := make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	slots := make(chan struct{}, 16)
	w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
		sent := time.Unix(0, int64(binary.LittleEndian.Uint64(d.Body)))
		mu.Lock()
		lat = append(lat, time.Since(sent))
		mu.Unlock()
		<-slots
		return nil
	}, queue.WorkerOptions{Concurrency: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		slots <- struct{}{}
		body := binary.LittleEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
		if _, err := q.Enqueue(context.Background(), queue.Message{Body: body}); err != nil {
			b.Fatal(err)
		}
	}
	for range cap(slots) {
		slots <- struct{}{}
	}
	b.StopTimer()
	if err := w.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := <-ran; err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

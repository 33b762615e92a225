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
// report msgs/s beside ns/op, B/op and allocs/op, where one op is one
// message enqueued and acked: allocs/op is allocations per processed
// message.
//
//	go test -run '^$' -bench . -benchmem -count 3 ./queue
//
// "channel" is the hand-written near-limit baseline: a plain buffered Go
// channel of 1024 slots, fed by one producer and drained by the same number
// of goroutines. The queue benchmarks hold their producer to the same
// bound: it keeps at most window messages enqueued and not yet acked, so
// that they measure the steady flow the channel measures, not the growth
// and drain of a backlog of b.N messages.

var payload = make([]byte, 64)

// window bounds the messages enqueued and not yet acked, as the channel's
// buffer bounds the baseline's.
const window = 1024

func newBenchQueue(b *testing.B) *queue.Queue {
	mem := queue.NewMemory(queue.MemoryOptions{})
	b.Cleanup(func() { mem.Close() })
	q, err := queue.New(mem, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return q
}

func reportRate(b *testing.B, d time.Duration) {
	b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
}

func batchOf(n int) []queue.Message {
	batch := make([]queue.Message, n)
	for i := range batch {
		batch[i] = queue.Message{Body: payload}
	}
	return batch
}

// BenchmarkEnqueue is the producer's side alone. Every 65536 messages the
// clock stops while a consumer drains them, so that the queue stays within
// its depth and the benchmark measures enqueues, not a heap of millions of
// messages.
func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	b.Run("channel", func(b *testing.B) {
		c := make(chan []byte, 1<<16)
		b.ReportAllocs()
		for i := range b.N {
			if i%(1<<16) == 0 {
				b.StopTimer()
				for len(c) > 0 {
					<-c
				}
				b.StartTimer()
			}
			c <- payload
		}
		reportRate(b, b.Elapsed())
	})
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			q := newBenchQueue(b)
			batch := batchOf(size)
			b.ReportAllocs()
			for i := 0; i < b.N; i += len(batch) {
				if i%(1<<16) < len(batch) {
					b.StopTimer()
					drain(b, q)
					b.StartTimer()
				}
				if _, err := q.EnqueueBatch(ctx, batch[:min(len(batch), b.N-i)]); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, b.Elapsed())
		})
	}
}

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

// flow runs one producer against consumers: the producer enqueues total
// messages in batches of 100, keeping at most window of them not yet acked;
// consumers report acks and done is closed when all are in.
type flow struct {
	total   int64
	acked   atomic.Int64
	waiting atomic.Bool   // the producer waits for room
	room    chan struct{} // a consumer's nudge to a waiting producer
	done    chan struct{}
}

func newFlow(total int) *flow {
	return &flow{total: int64(total), room: make(chan struct{}, 1), done: make(chan struct{})}
}

// ack records n acked messages.
func (f *flow) ack(n int) {
	if f.acked.Add(int64(n)) == f.total {
		close(f.done)
	}
	if f.waiting.Load() {
		select {
		case f.room <- struct{}{}:
		default:
		}
	}
}

func (f *flow) produce(b *testing.B, q *queue.Queue) {
	batch := batchOf(100)
	for sent := int64(0); sent < f.total; {
		n := min(int64(len(batch)), f.total-sent)
		for sent+n-f.acked.Load() > window {
			f.waiting.Store(true)
			if sent+n-f.acked.Load() > window { // no ack came in between
				<-f.room
			}
			f.waiting.Store(false)
		}
		if _, err := q.EnqueueBatch(context.Background(), batch[:n]); err != nil {
			b.Error(err)
			return
		}
		sent += n
	}
}

// BenchmarkReceiveAck is enqueue to ack: one producer enqueues in batches
// of 100, consumers Receive up to 32 (waiting when there is none, as a
// long-polling consumer does) and Ack each ("memory"); or, as a consumer
// tuned for throughput does, receive into the slice of their last batch
// (ReceiveAppend) and ack the batch in one AckBatch ("memory-batched").
func BenchmarkReceiveAck(b *testing.B) {
	for _, consumers := range []int{1, 16} {
		b.Run(fmt.Sprintf("channel/consumers=%d", consumers), func(b *testing.B) { benchChannel(b, consumers) })
		b.Run(fmt.Sprintf("memory/consumers=%d", consumers), func(b *testing.B) { benchReceiveAck(b, consumers, false) })
		b.Run(fmt.Sprintf("memory-batched/consumers=%d", consumers), func(b *testing.B) { benchReceiveAck(b, consumers, true) })
	}
}

func benchReceiveAck(b *testing.B, consumers int, batch bool) {
	q := newBenchQueue(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFlow(b.N)
	var wg sync.WaitGroup
	b.ReportAllocs()
	start := time.Now()
	for range consumers {
		wg.Go(func() {
			receipts := make([]queue.Receipt, 0, 32)
			var ds []queue.Delivery
			for {
				var err error
				if batch {
					ds, err = q.ReceiveAppend(ctx, ds[:0], queue.ReceiveOptions{Max: 32, Wait: time.Minute})
				} else {
					ds, err = q.Receive(ctx, queue.ReceiveOptions{Max: 32, Wait: time.Minute})
				}
				if err != nil {
					return
				}
				if batch {
					receipts = receipts[:0]
					for _, d := range ds {
						receipts = append(receipts, d.Receipt)
					}
					if err := q.AckBatch(ctx, receipts...); err != nil {
						b.Error(err)
					}
				} else {
					for _, d := range ds {
						if err := q.Ack(ctx, d.Receipt); err != nil {
							b.Error(err)
						}
					}
				}
				f.ack(len(ds))
			}
		})
	}
	f.produce(b, q)
	<-f.done
	reportRate(b, time.Since(start))
	cancel()
	wg.Wait()
}

func benchChannel(b *testing.B, consumers int) {
	c := make(chan []byte, window)
	var wg sync.WaitGroup
	var n atomic.Int64
	b.ReportAllocs()
	start := time.Now()
	for range consumers {
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
	reportRate(b, time.Since(start))
}

// BenchmarkWorker is enqueue to ack through a Worker with a handler that
// does nothing: receiving, lease keeping, timeouts and settlement included.
func BenchmarkWorker(b *testing.B) {
	for _, concurrency := range []int{1, 16} {
		b.Run(fmt.Sprintf("channel/consumers=%d", concurrency), func(b *testing.B) { benchChannel(b, concurrency) })
		b.Run(fmt.Sprintf("worker/concurrency=%d", concurrency), func(b *testing.B) {
			q := newBenchQueue(b)
			f := newFlow(b.N)
			w := queue.NewWorker(q, func(context.Context, queue.Delivery) error {
				f.ack(1)
				return nil
			}, queue.WorkerOptions{Concurrency: concurrency, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			ran := make(chan error, 1)
			b.ReportAllocs()
			start := time.Now()
			go func() { ran <- w.Run(context.Background()) }()
			f.produce(b, q)
			<-f.done
			if err := w.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			reportRate(b, time.Since(start))
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
	q := newBenchQueue(b)
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

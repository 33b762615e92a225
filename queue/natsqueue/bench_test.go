package natsqueue_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
)

// The workload: 20,000 no-op jobs of 128 bytes, 10 workers.
const (
	benchJobs    = 20_000
	benchWorkers = 10
	benchSize    = 128
)

func benchQueue(b *testing.B) (*nats.Conn, *queue.Queue) {
	url := enginetest.NATSURL(b)
	nc := connect(b, url)
	be := open(b, nc, &natsqueue.Options{Namespace: namespace(b, nc)})
	q, err := queue.New(be, "bench")
	require.NoError(b, err)
	return nc, q
}

// bareStream is the ceiling: a work-queue stream and one pull consumer with
// explicit acks, used with the bare client.
func bareStream(b *testing.B, nc *nats.Conn) (jetstream.JetStream, jetstream.Consumer, string) {
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	ns := namespace(b, nc)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ns + "_work", Subjects: []string{ns + ".bare"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(b, err)
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10_000})
	require.NoError(b, err)
	return js, c, ns + ".bare"
}

func rate(b *testing.B, n int, d time.Duration) {
	b.ReportMetric(float64(n)/d.Seconds(), "jobs/s")
}

func BenchmarkEnqueue(b *testing.B) {
	body := make([]byte, benchSize)
	b.Run("one-at-a-time", func(b *testing.B) {
		_, q := benchQueue(b)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := q.Enqueue(ctx, queue.Message{Body: body}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
	b.Run("batch-of-100", func(b *testing.B) {
		_, q := benchQueue(b)
		ctx := context.Background()
		msgs := make([]queue.Message, 100)
		for i := range msgs {
			msgs[i] = queue.Message{Body: body}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := q.EnqueueBatch(ctx, msgs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "jobs/s")
	})
	b.Run("bare-publish", func(b *testing.B) {
		url := enginetest.NATSURL(b)
		nc := connect(b, url)
		js, _, subj := bareStream(b, nc)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := js.Publish(ctx, subj, body); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
}

// timed wraps a backend to report, beside the throughput, what bounds it:
// messages per Receive and per ack call (Ack or AckBatch), and the mean
// time of each.
type timed struct {
	queue.Backend
	receives, received, receiveNs, acks, acked, ackNs atomic.Int64
}

func (t *timed) Receive(ctx context.Context, name string, o queue.ReceiveOptions) ([]queue.Delivery, error) {
	start := time.Now()
	ds, err := t.Backend.Receive(ctx, name, o)
	t.receiveNs.Add(int64(time.Since(start)))
	t.receives.Add(1)
	t.received.Add(int64(len(ds)))
	return ds, err
}

func (t *timed) Ack(ctx context.Context, name string, r queue.Receipt) error {
	start := time.Now()
	err := t.Backend.Ack(ctx, name, r)
	t.ackNs.Add(int64(time.Since(start)))
	t.acks.Add(1)
	t.acked.Add(1)
	return err
}

func (t *timed) AckBatch(ctx context.Context, name string, rs []queue.Receipt) []error {
	start := time.Now()
	errs := t.Backend.(queue.BatchAcker).AckBatch(ctx, name, rs)
	t.ackNs.Add(int64(time.Since(start)))
	t.acks.Add(1)
	t.acked.Add(int64(len(rs)))
	return errs
}

func (t *timed) PrefetchPerHandler() int {
	return t.Backend.(queue.PrefetchAdvisor).PrefetchPerHandler()
}

func (t *timed) report(b *testing.B) {
	n := float64(t.receives.Load())
	b.ReportMetric(float64(t.received.Load())/n, "msgs/receive")
	b.ReportMetric(float64(t.receiveNs.Load())/n/1e3, "µs/receive")
	b.ReportMetric(float64(t.ackNs.Load())/float64(t.acks.Load())/1e3, "µs/ack-call")
	b.ReportMetric(float64(t.acked.Load())/float64(t.acks.Load()), "msgs/ack-call")
}

// BenchmarkProcess drains 20,000 pre-enqueued no-op jobs with a Worker of
// 10 handlers (receive, handle, ack each), beside two bare clients over
// the same number of messages: one under the Worker's terms and the
// issue's pull-and-ack loop.
func BenchmarkProcess(b *testing.B) {
	body := make([]byte, benchSize)
	b.Run("worker", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			nc := connect(b, enginetest.NATSURL(b))
			tb := &timed{Backend: open(b, nc, &natsqueue.Options{Namespace: namespace(b, nc)})}
			q, err := queue.New(tb, "bench")
			require.NoError(b, err)
			ctx := context.Background()
			msgs := make([]queue.Message, queue.MaxBatch)
			for i := range msgs {
				msgs[i] = queue.Message{Body: body}
			}
			for range benchJobs / queue.MaxBatch {
				_, err := q.EnqueueBatch(ctx, msgs)
				require.NoError(b, err)
			}
			var n atomic.Int64
			all := make(chan struct{})
			w := queue.NewWorker(q, func(context.Context, queue.Delivery) error {
				if n.Add(1) == benchJobs {
					close(all)
				}
				return nil
			}, queue.WorkerOptions{Concurrency: benchWorkers, Logger: quiet()})
			b.StartTimer()
			start := time.Now()
			ran := make(chan error, 1)
			go func() { ran <- w.Run(ctx) }()
			<-all
			rate(b, benchJobs, time.Since(start))
			b.StopTimer()
			require.NoError(b, w.Shutdown(ctx))
			require.NoError(b, <-ran)
			st := w.Stats()
			require.Equal(b, uint64(benchJobs), st.Succeeded)
			tb.report(b)
		}
	})
	// The bare client under the Worker's former terms (no prefetch): at
	// most benchWorkers messages at a time, and each ack waits for the
	// server's confirmation (the acks of a batch concurrently), so that a
	// batch costs a pull and
	// an ack round trip, as a Worker's handler does. It is the ceiling for
	// confirmed acks with prefetch bounded by the handlers.
	b.Run("bare-confirmed", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			nc := connect(b, enginetest.NATSURL(b))
			js, c, subj := bareStream(b, nc)
			for range benchJobs {
				_, err := js.PublishAsync(subj, body)
				require.NoError(b, err)
			}
			<-js.PublishAsyncComplete()
			ctx := context.Background()
			b.StartTimer()
			start := time.Now()
			for got := 0; got < benchJobs; {
				batch, err := c.FetchNoWait(benchWorkers)
				require.NoError(b, err)
				var wg sync.WaitGroup
				for m := range batch.Messages() {
					got++
					wg.Go(func() { _ = m.DoubleAck(ctx) })
				}
				wg.Wait()
			}
			rate(b, benchJobs, time.Since(start))
			b.StopTimer()
		}
	})
	// The ceiling: batches of 100, acks not confirmed.
	b.Run("bare-pull-ack", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			nc := connect(b, enginetest.NATSURL(b))
			js, c, subj := bareStream(b, nc)
			for range benchJobs {
				_, err := js.PublishAsync(subj, body)
				require.NoError(b, err)
			}
			<-js.PublishAsyncComplete()
			b.StartTimer()
			start := time.Now()
			for got := 0; got < benchJobs; {
				batch, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
				require.NoError(b, err)
				for m := range batch.Messages() {
					_ = m.Ack()
					got++
				}
			}
			require.NoError(b, nc.Flush())
			rate(b, benchJobs, time.Since(start))
			b.StopTimer()
		}
	})
}

// BenchmarkLatency enqueues at a steady 500 jobs/s and measures the time
// from Enqueue to the handler, p50 and p99, with default settings; beside
// it, publish to a bare pull-and-ack consumer.
func BenchmarkLatency(b *testing.B) {
	const perSecond, jobs = 500, 2_000
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
	stamp := func() []byte {
		body := make([]byte, benchSize)
		binary.BigEndian.PutUint64(body, uint64(time.Now().UnixNano()))
		return body
	}
	since := func(body []byte) time.Duration {
		return time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(body))))
	}
	b.Run("worker", func(b *testing.B) {
		for range b.N {
			_, q := benchQueue(b)
			ctx := context.Background()
			lat := make(chan time.Duration, jobs)
			w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
				lat <- since(d.Body)
				return nil
			}, queue.WorkerOptions{Concurrency: benchWorkers, Logger: quiet()})
			ran := make(chan error, 1)
			go func() { ran <- w.Run(ctx) }()
			tick := time.NewTicker(time.Second / perSecond)
			for range jobs {
				<-tick.C
				_, err := q.Enqueue(ctx, queue.Message{Body: stamp()})
				require.NoError(b, err)
			}
			tick.Stop()
			got := make([]time.Duration, 0, jobs)
			for range jobs {
				got = append(got, <-lat)
			}
			require.NoError(b, w.Shutdown(ctx))
			require.NoError(b, <-ran)
			report(b, got)
		}
	})
	b.Run("bare-pull-ack", func(b *testing.B) {
		for range b.N {
			nc := connect(b, enginetest.NATSURL(b))
			js, c, subj := bareStream(b, nc)
			ctx := context.Background()
			lat := make(chan time.Duration, jobs)
			cc, err := c.Consume(func(m jetstream.Msg) {
				lat <- since(m.Data())
				_ = m.Ack()
			})
			require.NoError(b, err)
			tick := time.NewTicker(time.Second / perSecond)
			for range jobs {
				<-tick.C
				_, err := js.Publish(ctx, subj, stamp())
				require.NoError(b, err)
			}
			tick.Stop()
			got := make([]time.Duration, 0, jobs)
			for range jobs {
				got = append(got, <-lat)
			}
			cc.Stop()
			report(b, got)
		}
	})
}

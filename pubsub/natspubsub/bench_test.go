package natspubsub_test

import (
	"context"
	"encoding/binary"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/natspubsub"
)

// BenchmarkPublishReceive: one publisher on one node publishes b.N
// 256-byte messages, one at a time (each acknowledged by JetStream), to
// subscribers on another node; it ends when every subscriber has every
// message. Beside it, the bare client doing the same: JetStream publish and
// one ordered consumer per subscriber ("jetstream"), and core NATS
// publish/subscribe without persistence ("core", for reference). Metrics:
// msgs/s published and delivered to all, and the p50/p99 latency from
// Publish to receipt.
//
//	SWITCHBOARD_NATS_URL=nats://127.0.0.1:4222 go test -run '^$' -bench . -benchmem ./pubsub/natspubsub/
func BenchmarkPublishReceive(b *testing.B) {
	url := enginetest.NATSURL(b)
	for _, subs := range []int{1, 10, 100} {
		b.Run("subs="+strconv.Itoa(subs)+"/switchboard", func(b *testing.B) { benchBroker(b, url, subs) })
		b.Run("subs="+strconv.Itoa(subs)+"/jetstream", func(b *testing.B) { benchJetStream(b, url, subs) })
		b.Run("subs="+strconv.Itoa(subs)+"/core", func(b *testing.B) { benchCore(b, url, subs) })
	}
}

const benchSize = 256

// stamp returns a 256-byte payload carrying the send time.
func stamp(buf []byte) []byte {
	buf = buf[:benchSize]
	binary.LittleEndian.PutUint64(buf, uint64(time.Now().UnixNano()))
	return buf
}

func since(data []byte) time.Duration {
	return time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(data)))
}

// latencies collects one sample per message: subscriber k records the
// messages i with i%subs == k, so every subscriber is sampled.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	b.ReportMetric(float64(l.d[len(l.d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Microseconds()), "p99-µs")
}

func benchBroker(b *testing.B, url string, subs int) {
	ctx := context.Background()
	pubConn, subConn := connect(b, url), connect(b, url)
	ns := namespace(b, pubConn)
	pub := open(b, pubConn, &natspubsub.Options{Namespace: ns, Storage: jetstream.MemoryStorage})
	node := open(b, subConn, &natspubsub.Options{Namespace: ns, Storage: jetstream.MemoryStorage})
	var lat latencies
	var wg sync.WaitGroup
	for k := range subs {
		s, err := node.Subscribe(ctx, "bench", pubsub.Buffer(pubsub.MaxBuffer))
		require.NoError(b, err)
		defer s.Close()
		wg.Go(func() {
			var mine []time.Duration
			buf := make([]pubsub.Message, 0, 256)
			for i := 0; i < b.N; {
				got, err := s.NextBatch(ctx, buf[:0])
				if err != nil {
					b.Error(err)
					return
				}
				for _, m := range got {
					if i%subs == k {
						mine = append(mine, since(m.Data))
					}
					i++
				}
			}
			lat.add(mine)
		})
	}
	data := make([]byte, benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := pub.Publish(ctx, pubsub.Message{Topic: "bench", Data: stamp(slices.Clone(data))}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	lat.report(b, elapsed)
}

func benchJetStream(b *testing.B, url string, subs int) {
	ctx := context.Background()
	pubConn, subConn := connect(b, url), connect(b, url)
	ns := namespace(b, pubConn)
	js, err := jetstream.New(pubConn)
	require.NoError(b, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: ns, Subjects: []string{ns + ".>"}, Storage: jetstream.MemoryStorage})
	require.NoError(b, err)
	sjs, err := jetstream.New(subConn)
	require.NoError(b, err)
	var lat latencies
	var wg sync.WaitGroup
	for k := range subs {
		cons, err := sjs.OrderedConsumer(ctx, ns, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{ns + ".bench"}, DeliverPolicy: jetstream.DeliverNewPolicy})
		require.NoError(b, err)
		done := make(chan struct{})
		var mine []time.Duration
		i := 0
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if i%subs == k {
				mine = append(mine, since(m.Data()))
			}
			if i++; i == b.N {
				close(done)
			}
		})
		require.NoError(b, err)
		defer cc.Stop()
		wg.Go(func() {
			<-done
			lat.add(mine)
		})
	}
	data := make([]byte, benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := js.Publish(ctx, ns+".bench", stamp(slices.Clone(data))); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	lat.report(b, elapsed)
}

func benchCore(b *testing.B, url string, subs int) {
	pubConn, subConn := connect(b, url), connect(b, url)
	subject := "bench." + strconv.FormatInt(time.Now().UnixNano(), 36)
	var lat latencies
	var wg sync.WaitGroup
	for k := range subs {
		done := make(chan struct{})
		var mine []time.Duration
		i := 0
		s, err := subConn.Subscribe(subject, func(m *nats.Msg) {
			if i%subs == k {
				mine = append(mine, since(m.Data))
			}
			if i++; i == b.N {
				close(done)
			}
		})
		require.NoError(b, err)
		require.NoError(b, s.SetPendingLimits(-1, -1))
		defer s.Unsubscribe()
		wg.Go(func() {
			<-done
			lat.add(mine)
		})
	}
	require.NoError(b, subConn.Flush())
	data := make([]byte, benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := pubConn.Publish(subject, stamp(slices.Clone(data))); err != nil {
			b.Fatal(err)
		}
	}
	require.NoError(b, pubConn.Flush())
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	lat.report(b, elapsed)
}

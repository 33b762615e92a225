package redispubsub_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/pubsub"
)

// The benchmarks publish 256-byte messages from one goroutine, one at a
// time, to 1, 10 and 100 subscribers, over loopback, and report beside
// ns/op (one op is one message published and received by every subscriber):
//
//   - msgs/s: messages published and received by all subscribers, per
//     second, from the first publish to the last receipt;
//   - p50-µs, p99-µs: latency from Publish to receipt, at one subscriber.
//
// In the same function, the bare client doing the equivalent:
//
//   - bare-xread: XADD (MAXLEN ~), and one reader per subscriber with its
//     own connection looping on XREAD BLOCK;
//
//   - bare-pubsub: PUBLISH, and one SUBSCRIBE connection per subscriber
//     (no history, no cursor: a lower bound on what Redis costs).
//
//     SWITCHBOARD_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchmem ./pubsub/redispubsub/
func BenchmarkPublishReceive(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subs=%d/broker", n), func(b *testing.B) { benchBroker(b, n) })
		b.Run(fmt.Sprintf("subs=%d/bare-xread", n), func(b *testing.B) { benchBareXRead(b, n) })
		b.Run(fmt.Sprintf("subs=%d/bare-pubsub", n), func(b *testing.B) { benchBarePubSub(b, n) })
	}
}

const payloadSize = 256

// stamp returns a payload that carries the time it was made.
func stamp(buf []byte) []byte {
	buf = buf[:payloadSize]
	binary.LittleEndian.PutUint64(buf, uint64(time.Now().UnixNano()))
	return buf
}

func latency(data []byte) time.Duration {
	if len(data) < 8 {
		return 0
	}
	return time.Duration(time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(data)))
}

// run measures: readers are started by start (reader k must call got(k,
// data) for each message and return after want), then publish is called
// b.N times.
type measure struct {
	b       *testing.B
	lat     []time.Duration // reader 0's latencies
	wg      sync.WaitGroup
	started time.Time
}

func newMeasure(b *testing.B) *measure {
	return &measure{b: b, lat: make([]time.Duration, 0, b.N)}
}

func (m *measure) reader(k int, read func(got func(data []byte)) error) {
	m.wg.Go(func() {
		got := func(data []byte) {
			if k == 0 {
				m.lat = append(m.lat, latency(data))
			}
		}
		if err := read(got); err != nil {
			m.b.Error(err)
		}
	})
}

func (m *measure) run(publish func(data []byte) error) {
	buf := make([]byte, payloadSize)
	m.b.ReportAllocs()
	m.b.ResetTimer()
	m.started = time.Now()
	for range m.b.N {
		if err := publish(stamp(buf)); err != nil {
			m.b.Fatal(err)
		}
	}
	m.wg.Wait()
	elapsed := time.Since(m.started)
	m.b.StopTimer()
	m.b.ReportMetric(float64(m.b.N)/elapsed.Seconds(), "msgs/s")
	if len(m.lat) > 0 {
		slices.Sort(m.lat)
		m.b.ReportMetric(float64(m.lat[len(m.lat)/2].Microseconds()), "p50-µs")
		m.b.ReportMetric(float64(m.lat[len(m.lat)*99/100].Microseconds()), "p99-µs")
	}
}

func benchBroker(b *testing.B, n int) {
	ctx, ns, topic := context.Background(), namespace(b), topicPrefix()
	broker := newBroker(b, newClient(b), ns)
	m := newMeasure(b)
	for k := range n {
		sub, err := broker.Subscribe(ctx, topic, pubsub.Buffer(4096), pubsub.Overflow(pubsub.Block), pubsub.BlockTimeout(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sub.Close() })
		m.reader(k, func(got func([]byte)) error {
			buf := make([]pubsub.Message, 0, 256)
			for seen := 0; seen < b.N; {
				msgs, err := sub.NextBatch(ctx, buf[:0])
				if err != nil {
					return err
				}
				for _, msg := range msgs {
					got(msg.Data)
				}
				seen += len(msgs)
			}
			return nil
		})
	}
	m.run(func(data []byte) error {
		_, err := broker.Publish(ctx, pubsub.Message{Topic: topic, Data: data})
		return err
	})
}

func benchBareXRead(b *testing.B, n int) {
	ctx, ns := context.Background(), namespace(b)
	stream := "{" + ns + "}:stream" // deleted by namespace's cleanup
	client := newClient(b)
	m := newMeasure(b)
	for k := range n {
		opt := redisOptions(b)
		opt.PoolSize = 1
		reader := redis.NewClient(opt)
		b.Cleanup(func() { reader.Close() })
		m.reader(k, func(got func([]byte)) error {
			last := "0-0"
			for seen := 0; seen < b.N; {
				res, err := reader.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: 1000, Block: time.Second}).Result()
				if err == redis.Nil {
					continue
				}
				if err != nil {
					return err
				}
				for _, x := range res[0].Messages {
					s, _ := x.Values["d"].(string)
					got([]byte(s))
					last = x.ID
				}
				seen += len(res[0].Messages)
			}
			return nil
		})
	}
	m.run(func(data []byte) error {
		return client.XAdd(ctx, &redis.XAddArgs{Stream: stream, MaxLen: 100_000, Approx: true, Values: []any{"d", data}}).Err()
	})
}

func benchBarePubSub(b *testing.B, n int) {
	ctx, channel := context.Background(), "redispubsub-bench-"+topicPrefix()
	client := newClient(b)
	m := newMeasure(b)
	for k := range n {
		opt := redisOptions(b)
		reader := redis.NewClient(opt)
		b.Cleanup(func() { reader.Close() })
		ps := reader.Subscribe(ctx, channel)
		if _, err := ps.Receive(ctx); err != nil { // the subscription is in effect
			b.Fatal(err)
		}
		b.Cleanup(func() { ps.Close() })
		m.reader(k, func(got func([]byte)) error {
			for seen := 0; seen < b.N; seen++ {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return err
				}
				got([]byte(msg.Payload))
			}
			return nil
		})
	}
	m.run(func(data []byte) error { return client.Publish(ctx, channel, data).Err() })
}

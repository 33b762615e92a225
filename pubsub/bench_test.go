package pubsub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/pubsub"
)

// The benchmarks publish 128-byte messages from one goroutine and report
// deliveries/s (messages received by subscribers per second, over all of
// them) beside the usual ns/op and allocs/op, where one op is one publish.
//
//	go test -run '^$' -bench . -benchmem ./pubsub
//
// "channels" is the hand-written near-limit baseline: the same fan-out over
// plain buffered Go channels, one per subscriber, with a blocking send.

var payload = make([]byte, 128)

func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("channels/subs=%d", n), func(b *testing.B) { benchChannels(b, n) })
		b.Run(fmt.Sprintf("broker/subs=%d", n), func(b *testing.B) {
			// DropOldest with the largest buffer: lossless unless a reader
			// falls a million messages behind, which dropped/op would show.
			benchBroker(b, n, pubsub.Overflow(pubsub.DropOldest), pubsub.Buffer(pubsub.MaxBuffer))
		})
		b.Run(fmt.Sprintf("broker-block/subs=%d", n), func(b *testing.B) {
			benchBroker(b, n, pubsub.Overflow(pubsub.Block), pubsub.Buffer(4096), pubsub.BlockTimeout(time.Minute))
		})
	}
}

func benchChannels(b *testing.B, n int) {
	chans := make([]chan []byte, n)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan []byte, 1024)
		wg.Add(1)
		go func(c chan []byte) {
			defer wg.Done()
			for range c {
			}
		}(chans[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for _, c := range chans {
			c <- payload
		}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*float64(n)/time.Since(start).Seconds(), "deliveries/s")
}

func benchBroker(b *testing.B, n int, opts ...pubsub.SubscribeOption) {
	ctx := context.Background()
	br := pubsub.NewBroker()
	defer br.Close()
	var wg sync.WaitGroup
	var dropped sync.Map
	for i := 0; i < n; i++ {
		sub, err := br.Subscribe(ctx, "bench.topic", opts...)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			buf := make([]pubsub.Message, 0, 256)
			d, _ := sub.(interface{ Dropped() uint64 })
			for got, lost := 0, 0; got+lost < b.N; {
				msgs, err := sub.NextBatch(ctx, buf[:0])
				if err != nil {
					b.Error(err)
					return
				}
				got += len(msgs)
				if d != nil && d.Dropped() > 0 {
					lost = int(d.Dropped())
					dropped.Store(sub, d.Dropped())
				}
			}
		}()
	}
	m := pubsub.Message{Topic: "bench.topic", Data: payload}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := br.Publish(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	var lost uint64
	dropped.Range(func(_, v any) bool { lost += v.(uint64); return true })
	b.ReportMetric(float64(b.N)*float64(n)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(lost)/float64(b.N), "dropped/op")
}

// BenchmarkManyTopics publishes round-robin to 1,000 topics with one
// subscriber each.
func BenchmarkManyTopics(b *testing.B) {
	const topics = 1000
	ctx := context.Background()
	br := pubsub.NewBroker()
	defer br.Close()
	names := make([]string, topics)
	var wg sync.WaitGroup
	for i := range names {
		names[i] = fmt.Sprintf("bench.t%d", i)
		sub, err := br.Subscribe(ctx, names[i], pubsub.Overflow(pubsub.DropOldest), pubsub.Buffer(pubsub.MaxBuffer))
		if err != nil {
			b.Fatal(err)
		}
		want := b.N / topics
		if i < b.N%topics {
			want++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			buf := make([]pubsub.Message, 0, 256)
			for got := 0; got < want; {
				msgs, err := sub.NextBatch(ctx, buf[:0])
				if err != nil {
					b.Error(err)
					return
				}
				got += len(msgs)
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := br.Publish(ctx, pubsub.Message{Topic: names[i%topics], Data: payload}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// BenchmarkWildcard publishes round-robin to 10,000 subjects; one
// subscription "bench.*.even" matches half of them.
func BenchmarkWildcard(b *testing.B) {
	const subjects = 10_000
	ctx := context.Background()
	br := pubsub.NewBroker()
	defer br.Close()
	names := make([]string, subjects)
	for i := range names {
		kind := "odd"
		if i%2 == 0 {
			kind = "even"
		}
		names[i] = fmt.Sprintf("bench.s%d.%s", i, kind)
	}
	sub, err := br.Subscribe(ctx, "bench.*.even", pubsub.Overflow(pubsub.Block), pubsub.Buffer(8192), pubsub.BlockTimeout(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	want := (b.N + 1) / 2
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer sub.Close()
		buf := make([]pubsub.Message, 0, 256)
		for got := 0; got < want; {
			msgs, err := sub.NextBatch(ctx, buf[:0])
			if err != nil {
				b.Error(err)
				return
			}
			got += len(msgs)
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := br.Publish(ctx, pubsub.Message{Topic: names[i%subjects], Data: payload}); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.ReportMetric(float64(want)/time.Since(start).Seconds(), "deliveries/s")
}

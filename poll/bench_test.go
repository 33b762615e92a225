package poll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
)

const heldClients = 1000

func benchTransport() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 4 * heldClients, MaxIdleConnsPerHost: 4 * heldClients}}
}

// BenchmarkLongPollPublishToResponse: 1,000 long-poll requests are held
// over loopback; each iteration publishes one message and waits until all
// 1,000 responses have been read by their clients, which then poll again.
// It reports the publish→response latency seen by the clients.
func BenchmarkLongPollPublishToResponse(b *testing.B) {
	broker := pubsub.NewBroker(pubsub.History(1000, 0))
	defer broker.Close()
	clk := clock.NewFake(epoch)
	lp := poll.NewLongPoll(broker, func(r *http.Request) (string, error) { return "bench", nil }, &poll.LongPollOptions{Clock: clk})
	srv := httptest.NewServer(lp)
	defer srv.Close()
	hc := benchTransport()
	defer hc.CloseIdleConnections()

	ctx, cancel := context.WithCancel(context.Background())
	first, _ := broker.Publish(ctx, pubsub.Message{Topic: "bench", Data: []byte("start")})
	var (
		mu        sync.Mutex
		published time.Time
		lat       []time.Duration
		got       = make(chan struct{}, heldClients)
		wg        sync.WaitGroup
	)
	for range heldClients {
		wg.Go(func() {
			cursor := first
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/?wait=60s&cursor="+url.QueryEscape(string(cursor)), nil)
				resp, err := hc.Do(req)
				if err != nil {
					return
				}
				var r poll.Response
				err = json.NewDecoder(resp.Body).Decode(&r)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil {
					return
				}
				if len(r.Messages) > 0 {
					mu.Lock()
					lat = append(lat, time.Since(published))
					mu.Unlock()
					got <- struct{}{}
				}
				cursor = r.Cursor
			}
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := clk.BlockUntilTimers(ctx, heldClients); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		published = time.Now()
		mu.Unlock()
		if _, err := broker.Publish(ctx, pubsub.Message{Topic: "bench", Data: []byte(fmt.Sprint(i))}); err != nil {
			b.Fatal(err)
		}
		for range heldClients {
			<-got
		}
	}
	b.StopTimer()
	cancel()
	_ = lp.Shutdown(context.Background())
	wg.Wait()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	}
}

// BenchmarkLongPollCatchUp measures requests served per second when
// clients are behind: each request gets max=100 retained messages at once.
// The baseline serves a response of the same size, pre-encoded, from a
// plain handler: the cost of net/http and the loopback alone.
func BenchmarkLongPollCatchUp(b *testing.B) {
	broker := pubsub.NewBroker(pubsub.History(10_000, 0))
	defer broker.Close()
	var cursors []pubsub.Cursor
	for i := range 1000 {
		c, _ := broker.Publish(context.Background(), pubsub.Message{Topic: "bench", Data: fmt.Appendf(nil, `{"n":%d,"pad":"0123456789abcdef"}`, i)})
		cursors = append(cursors, c)
	}
	lp := poll.NewLongPoll(broker, func(r *http.Request) (string, error) { return "bench", nil }, nil)
	defer lp.Shutdown(context.Background())
	lpSrv := httptest.NewServer(lp)
	defer lpSrv.Close()

	// The same body the long poll sends for one cursor, served as bytes.
	resp, err := http.Get(lpSrv.URL + "/?max=100&cursor=" + url.QueryEscape(string(cursors[0])))
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	baseSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer baseSrv.Close()

	run := func(b *testing.B, base string) {
		hc := benchTransport()
		defer hc.CloseIdleConnections()
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				c := cursors[i%800]
				i += 7
				resp, err := hc.Get(base + "/?max=100&cursor=" + url.QueryEscape(string(c)))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}
	b.Run("baseline=static-body", func(b *testing.B) { run(b, baseSrv.URL) })
	b.Run("longpoll", func(b *testing.B) { run(b, lpSrv.URL) })
}

// BenchmarkHeldRequestMemory reports the heap bytes per held request: 1,000
// requests held by the long poll, against the baseline of 1,000 requests
// held by a plain handler that blocks until released (net/http's own cost,
// client side included in both).
func BenchmarkHeldRequestMemory(b *testing.B) {
	measure := func(b *testing.B, h http.Handler, held func() int, release func()) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		hc := benchTransport()
		defer hc.CloseIdleConnections()
		var per float64
		for i := 0; i < b.N; i++ {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var wg sync.WaitGroup
			for range heldClients {
				wg.Go(func() {
					resp, err := hc.Get(srv.URL + "/?wait=60s")
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			for held() < heldClients {
				runtime.Gosched()
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			per = float64(after.HeapAlloc-before.HeapAlloc) / heldClients
			release()
			wg.Wait()
		}
		b.ReportMetric(per, "heap-B/held")
	}
	b.Run("baseline=blocking-handler", func(b *testing.B) {
		var mu sync.Mutex
		n := 0
		gate := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			g := gate
			mu.Unlock()
			select {
			case <-g:
			case <-r.Context().Done():
			}
			w.Write([]byte("{}"))
		})
		measure(b, h, func() int { mu.Lock(); defer mu.Unlock(); return n }, func() {
			mu.Lock()
			close(gate)
			gate, n = make(chan struct{}), 0
			mu.Unlock()
		})
	})
	b.Run("longpoll", func(b *testing.B) {
		broker := pubsub.NewBroker(pubsub.History(10, 0))
		defer broker.Close()
		lp := poll.NewLongPoll(broker, func(r *http.Request) (string, error) { return "bench", nil }, nil)
		defer lp.Shutdown(context.Background())
		measure(b, lp, lp.Held, func() {
			broker.Publish(context.Background(), pubsub.Message{Topic: "bench", Data: []byte("x")})
		})
	})
}

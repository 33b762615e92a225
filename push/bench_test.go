package push_test

// Loopback benchmarks of the hub against a hand-written near-limit
// baseline. The clients run in a child process (this test binary, re-run
// as TestBenchClients) so that the CPU and memory measured here are the
// server's alone. Run with:
//
//	go test -run '^$' -bench . -benchmem -benchtime 1x ./push/

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

const benchTopic = "bench.feed"

// payload returns a 256-byte text message that starts with the time it
// was made, for latency.
func payload(buf []byte) []byte {
	b := strconv.AppendInt(buf[:0], time.Now().UnixNano(), 10)
	b = append(b, ' ')
	for len(b) < 256 {
		b = append(b, 'x')
	}
	return b
}

// clients is the child process holding the client connections.
type clients struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startClients starts n clients of kind ("push" subscribes with the wire
// protocol, "raw" just reads) against url, each expecting expect messages
// (0: stay idle until stopped), and waits until all are connected.
func startClients(b *testing.B, kind, url string, n, expect int) *clients {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^TestBenchClients$")
	cmd.Env = append(os.Environ(), "PUSH_BENCH_CLIENTS="+kind, "PUSH_BENCH_URL="+url,
		"PUSH_BENCH_CONNS="+strconv.Itoa(n), "PUSH_BENCH_EXPECT="+strconv.Itoa(expect))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &clients{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	if line := c.line(b); line != "ready" {
		b.Fatalf("clients: %q, want ready", line)
	}
	return c
}

func (c *clients) line(b *testing.B) string {
	for {
		s, err := c.out.ReadString('\n')
		if err != nil {
			b.Fatalf("clients ended: %v", err)
		}
		s = strings.TrimSpace(s)
		if strings.HasPrefix(s, "ready") || strings.HasPrefix(s, "done") {
			return s
		}
	}
}

func (c *clients) stop() {
	c.stdin.Close()
	_ = c.cmd.Wait()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// broadcaster is what a benchmark publishes through.
type broadcaster interface {
	broadcast(p []byte)
	http.Handler
	close()
}

// hubTarget is the push hub on a memory broker, every client subscribed
// to benchTopic.
type hubTarget struct {
	http.Handler
	hub    *push.Hub
	broker *pubsub.Broker
}

func newHubTarget(b *testing.B, queue int) *hubTarget {
	broker := pubsub.NewBroker(pubsub.History(200_000, 0))
	hub, err := push.NewHub(broker, push.SendQueue(queue, 64<<20), push.MaxConnsPerUser(1<<20))
	if err != nil {
		b.Fatal(err)
	}
	return &hubTarget{Handler: push.NewHandler(hub), hub: hub, broker: broker}
}

func (t *hubTarget) broadcast(p []byte) {
	_, _ = t.broker.Publish(context.Background(), pubsub.Message{Topic: benchTopic, Data: p})
}

func (t *hubTarget) close() {
	_ = t.hub.Shutdown(context.Background())
	t.broker.Close()
}

// baseline is the near-limit hand-written broadcaster: coder/websocket,
// one writer goroutine per connection packing everything queued into one
// frame, messages shared, not copied.
type baseline struct {
	mu    sync.Mutex
	conns map[*baseConn]struct{}
	wg    sync.WaitGroup
	done  chan struct{}
}

type baseConn struct {
	c    *websocket.Conn
	mu   sync.Mutex
	q    [][]byte
	wake chan struct{}
}

func newBaseline() *baseline {
	return &baseline{conns: make(map[*baseConn]struct{}), done: make(chan struct{})}
}

func (s *baseline) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	s.wg.Add(1)
	defer s.wg.Done()
	ctx := c.CloseRead(r.Context())
	bc := &baseConn{c: c, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	s.conns[bc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, bc)
		s.mu.Unlock()
		c.CloseNow()
	}()
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			c.Close(websocket.StatusGoingAway, "")
			return
		case <-bc.wake:
		}
		bc.mu.Lock()
		q := bc.q
		bc.q = nil
		bc.mu.Unlock()
		if len(q) == 0 {
			continue
		}
		buf = buf[:0]
		for i, m := range q {
			if i > 0 {
				buf = append(buf, '\n')
			}
			buf = append(buf, m...)
		}
		if c.Write(ctx, websocket.MessageText, buf) != nil {
			return
		}
	}
}

func (s *baseline) broadcast(p []byte) {
	s.mu.Lock()
	for bc := range s.conns {
		bc.mu.Lock()
		bc.q = append(bc.q, p)
		bc.mu.Unlock()
		select {
		case bc.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

func (s *baseline) close() {
	close(s.done)
	s.wg.Wait()
}

func BenchmarkBroadcast(b *testing.B) {
	raiseFileLimit()
	for _, n := range []int{100, 1000} {
		msgs := 2_000_000 / n
		for _, kind := range []string{"hub", "baseline"} {
			b.Run(fmt.Sprintf("conns=%d/%s", n, kind), func(b *testing.B) {
				var target broadcaster
				clientKind := "raw"
				if kind == "hub" {
					target, clientKind = newHubTarget(b, msgs+16), "push"
				} else {
					target = newBaseline()
				}
				srv := httptest.NewServer(target)
				defer srv.Close()
				defer target.close()
				url := "ws" + strings.TrimPrefix(srv.URL, "http")
				var elapsed, cpu time.Duration
				for range b.N {
					cl := startClients(b, clientKind, url, n, msgs)
					runtime.GC()
					p := make([][]byte, msgs)
					for i := range p {
						p[i] = payload(nil)
					}
					start, cpu0 := time.Now(), cpuTime()
					for i := range p {
						target.broadcast(p[i])
					}
					if line := cl.line(b); !strings.HasPrefix(line, "done") {
						b.Fatalf("clients: %q", line)
					}
					elapsed += time.Since(start)
					cpu += cpuTime() - cpu0
					cl.stop()
				}
				delivered := float64(b.N * n * msgs)
				b.ReportMetric(delivered/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64(cpu.Nanoseconds())/delivered, "cpu-ns/msg")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkLatency publishes at a steady 2,000 messages per second to 100
// subscribers and reports publish→receive percentiles over all deliveries.
func BenchmarkLatency(b *testing.B) {
	const n, rate, msgs = 100, 2000, 4000
	for _, kind := range []string{"hub", "baseline"} {
		b.Run(kind, func(b *testing.B) {
			var target broadcaster
			clientKind := "raw"
			if kind == "hub" {
				target, clientKind = newHubTarget(b, push.DefaultQueueMessages), "push"
			} else {
				target = newBaseline()
			}
			srv := httptest.NewServer(target)
			defer srv.Close()
			defer target.close()
			url := "ws" + strings.TrimPrefix(srv.URL, "http")
			var p50, p99 float64
			for range b.N {
				cl := startClients(b, clientKind, url, n, msgs)
				tick := time.NewTicker(time.Second / rate)
				for range msgs {
					<-tick.C
					target.broadcast(payload(nil))
				}
				tick.Stop()
				f := strings.Fields(cl.line(b))
				a, _ := strconv.ParseFloat(f[1], 64)
				c, _ := strconv.ParseFloat(f[2], 64)
				p50, p99 = p50+a, p99+c
				cl.stop()
			}
			b.ReportMetric(p50/float64(b.N)/1e3, "p50-µs")
			b.ReportMetric(p99/float64(b.N)/1e3, "p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	pages, _ := strconv.ParseUint(string(f[1]), 10, 64)
	return pages * uint64(os.Getpagesize())
}

// BenchmarkIdleConnections holds 5,000 idle connections and reports what
// each costs the server: RSS, Go heap, goroutines.
func BenchmarkIdleConnections(b *testing.B) {
	const n = 5000
	raiseFileLimit()
	for _, kind := range []string{"hub", "baseline"} {
		b.Run(kind, func(b *testing.B) {
			var target broadcaster
			clientKind := "raw"
			if kind == "hub" {
				target, clientKind = newHubTarget(b, push.DefaultQueueMessages), "push"
			} else {
				target = newBaseline()
			}
			srv := httptest.NewServer(target)
			defer srv.Close()
			defer target.close()
			url := "ws" + strings.TrimPrefix(srv.URL, "http")
			for range b.N {
				var m0, m1 runtime.MemStats
				debug.FreeOSMemory()
				runtime.ReadMemStats(&m0)
				r0, g0 := rss(), runtime.NumGoroutine()
				cl := startClients(b, clientKind, url, n, 0)
				debug.FreeOSMemory()
				runtime.ReadMemStats(&m1)
				r1, g1 := rss(), runtime.NumGoroutine()
				b.ReportMetric((float64(r1)-float64(r0))/n/1024, "rss-KiB/conn")
				b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/n/1024, "heap-KiB/conn")
				b.ReportMetric(float64(m1.StackInuse-m0.StackInuse)/n/1024, "stack-KiB/conn")
				b.ReportMetric(float64(g1-g0)/n, "goroutines/conn")
				b.ReportMetric(0, "ns/op")
				cl.stop()
			}
		})
	}
}

// TestBenchClients is the benchmarks' client process; it does nothing in
// a normal test run.
func TestBenchClients(t *testing.T) {
	kind := os.Getenv("PUSH_BENCH_CLIENTS")
	if kind == "" {
		t.Skip("the benchmarks' client process")
	}
	raiseFileLimit()
	url := os.Getenv("PUSH_BENCH_URL")
	n, _ := strconv.Atoi(os.Getenv("PUSH_BENCH_CONNS"))
	expect, _ := strconv.Atoi(os.Getenv("PUSH_BENCH_EXPECT"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := websocket.Dial(ctx, url, nil)
			if err != nil {
				t.Error(err)
				return
			}
			c.SetReadLimit(64 << 20)
			if kind == "push" {
				_, _, _ = c.Read(ctx) // welcome
				_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"s","topic":"`+benchTopic+`"}`))
				_, _, _ = c.Read(ctx) // its reply
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	fmt.Println("ready")
	if expect == 0 {
		_, _ = io.Copy(io.Discard, os.Stdin)
		for _, c := range conns {
			c.CloseNow()
		}
		return
	}
	lat := make([][]time.Duration, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.CloseNow()
			got := 0
			for got < expect {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Errorf("client %d after %d messages: %v", i, got, err)
					return
				}
				now := time.Now().UnixNano()
				for line := range bytes.SplitSeq(b, []byte("\n")) {
					if kind == "push" {
						j := bytes.Index(line, []byte(`"text":"`))
						if j < 0 {
							continue
						}
						line = line[j+8:]
					}
					sp := bytes.IndexByte(line, ' ')
					if sp <= 0 {
						continue
					}
					ts, _ := strconv.ParseInt(string(line[:sp]), 10, 64)
					if i%10 == 0 {
						lat[i] = append(lat[i], time.Duration(now-ts))
					}
					got++
				}
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		all = []time.Duration{0}
	}
	fmt.Printf("done %d %d\n", all[len(all)/2], all[len(all)*99/100])
	_, _ = io.Copy(io.Discard, os.Stdin)
}

package sse_test

// Load benchmarks over loopback: the sse Handler (over a memory pubsub
// broker) against a hand-written near-limit baseline, a minimal SSE server
// built on a map of channels, one per client, that coalesces whatever queued
// while a write was in flight into one write and one flush.
//
// The clients run in a separate process (this test binary, re-executed with
// -test.run=^TestBenchLoadClient$), so that getrusage splits the CPU cleanly:
// the benchmark process holds only the server and the publisher. Clients
// are cheap raw HTTP/1.1 readers (a net.Conn, a bufio.Reader and the
// response's chunked decoding), never sse.Client, so the load side is not
// the bottleneck. They tell the benchmark over their stdout when every
// connection is open and when every connection has received a window of
// events; the publisher keeps at most inFlight events ahead of the slowest
// client, below both servers' buffer (1024), so no client is disconnected
// as slow and the figures are of steady delivery.
//
//	go test -run '^$' -bench . -benchtime=2s ./sse
//
// Metrics:
//   - events/s: events delivered per second, summed over clients.
//   - events/write: events delivered per write on a connection (a write
//     system call): what coalescing achieves.
//   - ns-cpu/event: the server process's CPU time (user+sys) per delivered
//     event; client-ns-cpu/event is the client process's.
//   - p50-µs, p99-µs: publish → receive latency at a steady rate.
//   - KiB-RSS/conn, KiB-heap/conn, KiB-stack/conn, goroutines/conn: what
//     each idle connection adds to the server process.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/sse"
)

const (
	benchEventSize = 256
	ackWindow      = 128           // clients report every ackWindow events
	inFlight       = 4 * ackWindow // the publisher's lead over the slowest client
	benchBuffer    = 1024          // both servers' per-client bound
	benchTopic     = "bench"
)

// Environment of the client process.
const (
	envLoad    = "SSE_BENCH_LOAD_CLIENT" // set: TestBenchLoadClient runs
	envAddr    = "SSE_BENCH_ADDR"
	envPath    = "SSE_BENCH_PATH"
	envConns   = "SSE_BENCH_CONNS"
	envEvents  = "SSE_BENCH_EVENTS" // per connection; 0 = hold the connections idle
	envLatency = "SSE_BENCH_LATENCY"
)

func BenchmarkFanout(b *testing.B) {
	for _, clients := range []int{100, 1000} {
		for _, impl := range benchImpls[:2] {
			b.Run(fmt.Sprintf("impl=%s/clients=%d", impl.name, clients), func(b *testing.B) {
				benchDelivery(b, impl, clients, 0)
			})
		}
	}
}

func BenchmarkLatency(b *testing.B) {
	const clients, rate = 100, 1000
	for _, impl := range benchImpls[:2] {
		b.Run(fmt.Sprintf("impl=%s/clients=%d/rate=%d", impl.name, clients, rate), func(b *testing.B) {
			benchDelivery(b, impl, clients, time.Second/rate)
		})
	}
}

func BenchmarkIdleConns(b *testing.B) {
	const conns = 5000
	raiseFileLimit(b, conns+256)
	for _, impl := range benchImpls {
		b.Run(fmt.Sprintf("impl=%s/conns=%d", impl.name, conns), func(b *testing.B) {
			benchIdle(b, impl, conns)
		})
	}
}

// benchDelivery publishes b.N events of benchEventSize bytes to clients
// connections, as fast as flow control allows (every == 0), or one every
// every (and then it reports latency).
func benchDelivery(b *testing.B, impl benchImpl, clients int, every time.Duration) {
	raiseFileLimit(b, clients+256)
	srv := startBenchServer(b, impl)
	defer srv.stop(b)
	cl := startLoadClients(b, srv.addr, clients, b.N, every > 0)
	defer cl.stop(b)

	var tick *time.Ticker
	if every > 0 {
		tick = time.NewTicker(every)
		defer tick.Stop()
	}
	acked := 0 // events every client has received
	b.ResetTimer()
	start, cpu0, writes0 := time.Now(), cpuTime(), srv.writes.Load()
	for i := range b.N {
		for i-acked >= inFlight {
			acked = cl.waitAck(b)
		}
		if tick != nil {
			<-tick.C
		}
		data := make([]byte, benchEventSize)
		stamp := strconv.AppendInt(data[:0], time.Now().UnixNano(), 10)
		data[len(stamp)] = ' '
		for j := len(stamp) + 1; j < len(data); j++ {
			data[j] = 'x'
		}
		if err := srv.publish(data); err != nil {
			b.Fatal(err)
		}
	}
	res := cl.waitDone(b)
	elapsed, cpu, writes := time.Since(start), cpuTime()-cpu0, srv.writes.Load()-writes0
	b.StopTimer()

	delivered := float64(b.N) * float64(clients)
	if every == 0 {
		b.ReportMetric(delivered/elapsed.Seconds(), "events/s")
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/delivered, "ns-cpu/event")
	b.ReportMetric(float64(res.cpu.Nanoseconds())/delivered, "client-ns-cpu/event")
	b.ReportMetric(delivered/float64(max(writes, 1)), "events/write")
	if every > 0 {
		b.ReportMetric(float64(res.p50.Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(res.p99.Nanoseconds())/1e3, "p99-µs")
	}
}

// benchIdle opens conns idle streams (b.N times) and reports what each adds
// to this process.
func benchIdle(b *testing.B, impl benchImpl, conns int) {
	var rss, heap, stack, goroutines float64
	for range b.N {
		srv := startBenchServer(b, impl)
		before := measureMemory()
		cl := startLoadClients(b, srv.addr, conns, 0, false)
		if srv.streams != nil {
			if n := srv.streams(); n != conns {
				b.Fatalf("%d streams open after every client got its response, want %d", n, conns)
			}
		}
		after := measureMemory()
		cl.stop(b)
		srv.stop(b)
		rss += float64(after.rss-before.rss) / 1024 / float64(conns)
		heap += float64(after.heap-before.heap) / 1024 / float64(conns)
		stack += float64(after.stack-before.stack) / 1024 / float64(conns)
		goroutines += float64(after.goroutines-before.goroutines) / float64(conns)
	}
	n := float64(b.N)
	b.ReportMetric(rss/n, "KiB-RSS/conn")
	b.ReportMetric(heap/n, "KiB-heap/conn")
	b.ReportMetric(stack/n, "KiB-stack/conn")
	b.ReportMetric(goroutines/n, "goroutines/conn")
}

type memory struct {
	rss, heap, stack uint64
	goroutines       int
}

// measureMemory collects garbage, returns freed memory to the system, and
// reads what is left.
func measureMemory() memory {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memory{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
	if statm, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(statm)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			m.rss = pages * uint64(os.Getpagesize())
		}
	}
	return m
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseFileLimit makes room for n open files, up to the hard limit.
func raiseFileLimit(tb testing.TB, files int) {
	n := uint64(files)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		tb.Skipf("needs %d open files, the hard limit is %d (raise it with ulimit -Hn)", n, lim.Max)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
}

// The servers.

type benchImpl struct {
	name  string
	start func() (http.Handler, func([]byte) error, func() int, func())
}

var benchImpls = []benchImpl{
	{"sse", startSSEImpl},
	{"baseline", startBaselineImpl},
	{"nethttp-floor", startFloorImpl}, // idle connections only
}

// startSSEImpl: the Handler over a memory broker with history, as an
// application would configure it (defaults but for the history).
func startSSEImpl() (http.Handler, func([]byte) error, func() int, func()) {
	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	h := sse.NewHandler(broker, func(*http.Request) (string, error) { return benchTopic, nil },
		sse.Buffer(benchBuffer))
	publish := func(data []byte) error {
		_, err := broker.Publish(context.Background(), pubsub.Message{Topic: benchTopic, Data: data})
		return err
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		broker.Close()
	}
	return h, publish, h.Streams, stop
}

func startBaselineImpl() (http.Handler, func([]byte) error, func() int, func()) {
	s := &chanServer{clients: make(map[*chanClient]struct{}), done: make(chan struct{})}
	return s, s.publish, s.streams, s.close
}

// startFloorImpl: net/http holding a stream open and doing nothing else,
// the floor of what an idle stream costs.
func startFloorImpl() (http.Handler, func([]byte) error, func() int, func()) {
	done := make(chan struct{})
	var open atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	publish := func([]byte) error { return errors.New("the floor server does not publish") }
	return h, publish, func() int { return int(open.Load()) }, func() { close(done) }
}

// chanServer is the baseline: a minimal SSE server on a map of channels,
// one per client. Publish encodes each event once and offers it to every
// client's channel; a client whose channel is full is disconnected (the
// same bound and policy as the Handler's default). Each client's handler
// takes one event, then everything else already queued, and writes it all
// with one write, under one write deadline, and one flush.
type chanServer struct {
	mu      sync.Mutex
	clients map[*chanClient]struct{} // guarded by mu
	seq     uint64                   // guarded by mu
	done    chan struct{}            // closed by close
}

type chanClient struct {
	ch     chan *chanFrame
	kicked chan struct{} // closed when publish drops the client
}

type chanFrame struct{ b []byte }

func (s *chanServer) publish(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	f := &chanFrame{}
	f.b = append(f.b, "id: "...)
	f.b = strconv.AppendUint(f.b, s.seq, 10)
	f.b = append(f.b, "\ndata: "...)
	f.b = append(f.b, data...)
	f.b = append(f.b, "\n\n"...)
	for c := range s.clients {
		select {
		case c.ch <- f:
		default:
			delete(s.clients, c)
			close(c.kicked)
		}
	}
	return nil
}

func (s *chanServer) streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

func (s *chanServer) close() { close(s.done) }

func (s *chanServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &chanClient{ch: make(chan *chanFrame, benchBuffer), kicked: make(chan struct{})}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if _, err := io.WriteString(w, "retry: 3000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	var buf []byte
	for {
		select {
		case f := <-c.ch:
			buf = append(buf[:0], f.b...)
		drain:
			for {
				select {
				case f := <-c.ch:
					buf = append(buf, f.b...)
				default:
					break drain
				}
			}
			_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return
			}
		case <-c.kicked:
			return
		case <-s.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

type benchServer struct {
	addr    string
	publish func([]byte) error
	streams func() int
	writes  *atomic.Int64 // on the server's connections
	srv     *http.Server
	served  chan error
	stopImp func()
}

func startBenchServer(tb testing.TB, impl benchImpl) *benchServer {
	h, publish, streams, stopImpl := impl.start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopImpl()
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /events", h)
	s := &benchServer{
		addr: ln.Addr().String(), publish: publish, streams: streams, writes: new(atomic.Int64),
		srv:    &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		served: make(chan error, 1), stopImp: stopImpl,
	}
	go func() { s.served <- s.srv.Serve(countingListener{ln, s.writes}) }()
	return s
}

// countingListener counts the writes on its connections: the write system
// calls, which is what coalescing saves.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// stop ends the streams, then the server, and waits for both.
func (s *benchServer) stop(tb testing.TB) {
	s.stopImp()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		tb.Errorf("server shutdown: %v", err)
		s.srv.Close()
	}
	if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
		tb.Errorf("serve: %v", err)
	}
}

// The client process, seen from the benchmark.

type loadClients struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // the client's stdout, line by line
	read  chan struct{} // closed when its stdout is read to the end
	acked int
}

type loadResult struct {
	cpu      time.Duration
	p50, p99 time.Duration
}

// startLoadClients starts the client process and returns once its conns
// connections have their response headers: every stream is subscribed.
func startLoadClients(tb testing.TB, addr string, conns, events int, latency bool) *loadClients {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchLoadClient$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envLoad+"=1",
		envAddr+"="+addr,
		envPath+"=/events",
		envConns+"="+strconv.Itoa(conns),
		envEvents+"="+strconv.Itoa(events),
		envLatency+"="+strconv.FormatBool(latency),
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &loadClients{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), read: make(chan struct{})}
	go func() {
		defer close(c.read)
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	if line := c.next(tb, 60*time.Second); line != "ready" {
		c.stop(tb)
		tb.Fatalf("client process said %q, want ready", line)
	}
	return c
}

// next returns the client process's next protocol line, skipping the test
// framework's output.
func (c *loadClients) next(tb testing.TB, timeout time.Duration) string {
	tb.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				tb.Fatal("the client process ended early")
			}
			if strings.HasPrefix(line, "sse-bench ") {
				line = strings.TrimPrefix(line, "sse-bench ")
				if strings.HasPrefix(line, "error ") {
					tb.Fatalf("client process: %s", line)
				}
				return line
			}
		case <-t.C:
			tb.Fatalf("no word from the client process in %v", timeout)
		}
	}
}

// waitAck waits for the next window acknowledgement, takes those already
// waiting too, and returns how many events every client has received.
func (c *loadClients) waitAck(tb testing.TB) int {
	line := c.next(tb, 60*time.Second)
	for {
		n, err := strconv.Atoi(strings.TrimPrefix(line, "acked "))
		if err != nil {
			tb.Fatalf("client process said %q, want acked N", line)
		}
		c.acked = max(c.acked, n)
		select {
		case l, ok := <-c.lines:
			if !ok {
				return c.acked
			}
			if !strings.HasPrefix(l, "sse-bench acked ") {
				tb.Fatalf("client process said %q, want acked N", l)
			}
			line = strings.TrimPrefix(l, "sse-bench ")
		default:
			return c.acked
		}
	}
}

// waitDone waits until every client has received every event.
func (c *loadClients) waitDone(tb testing.TB) loadResult {
	for {
		line := c.next(tb, 60*time.Second)
		if strings.HasPrefix(line, "acked ") {
			continue
		}
		var r loadResult
		var cpu, p50, p99 int64
		if _, err := fmt.Sscanf(line, "done cpu=%d p50=%d p99=%d", &cpu, &p50, &p99); err != nil {
			tb.Fatalf("client process said %q, want done ...: %v", line, err)
		}
		r.cpu, r.p50, r.p99 = time.Duration(cpu), time.Duration(p50), time.Duration(p99)
		return r
	}
}

// stop tells the client process to close its connections and exit, and
// waits for it.
func (c *loadClients) stop(tb testing.TB) {
	c.stdin.Close()
	t := time.AfterFunc(30*time.Second, func() { c.cmd.Process.Kill() })
	defer t.Stop()
	for range c.lines { // read to the end so the process is never blocked on its stdout
	}
	<-c.read
	if err := c.cmd.Wait(); err != nil {
		tb.Errorf("client process: %v", err)
	}
}

// TestBenchLoadClient is not a test: it is the client process of the
// benchmarks, and does nothing unless SSE_BENCH_LOAD_CLIENT is set.
func TestBenchLoadClient(t *testing.T) {
	if os.Getenv(envLoad) == "" {
		t.Skip("the client process of the benchmarks; runs only under them")
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, "sse-bench "+format+"\n", args...)
		out.Flush()
	}
	conns, _ := strconv.Atoi(os.Getenv(envConns))
	events, _ := strconv.Atoi(os.Getenv(envEvents))
	latency := os.Getenv(envLatency) == "true"
	raiseFileLimit(t, conns+256)

	// stdin ends when the benchmark is done with us (or is gone).
	quit := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(quit)
	}()

	readers := make([]*loadConn, conns)
	var dialed sync.WaitGroup
	sem := make(chan struct{}, 64)
	var dialErr atomic.Pointer[error]
	for i := range readers {
		dialed.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; dialed.Done() }()
			c, err := dialStream(os.Getenv(envAddr), os.Getenv(envPath))
			if err != nil {
				dialErr.CompareAndSwap(nil, &err)
				return
			}
			readers[i] = c
		}()
	}
	dialed.Wait()
	closeAll := func() {
		for _, c := range readers {
			if c != nil {
				c.conn.Close()
			}
		}
	}
	if p := dialErr.Load(); p != nil {
		closeAll()
		say("error %v", *p)
		<-quit
		return
	}

	windows := make([]atomic.Int32, events/ackWindow+1)
	var finished atomic.Int32
	allDone := make(chan struct{})
	var reading sync.WaitGroup
	cpu0 := cpuTime()
	say("ready")
	for _, c := range readers {
		if latency {
			c.lat = make([]time.Duration, 0, events)
		}
		reading.Add(1)
		go func() {
			defer reading.Done()
			c.read(events, latency, func(n int) {
				if n%ackWindow == 0 && int(windows[n/ackWindow-1].Add(1)) == conns {
					say("acked %d", n)
				}
				if n == events && int(finished.Add(1)) == conns {
					close(allDone)
				}
			})
		}()
	}
	if events > 0 {
		select {
		case <-allDone:
			cpu := cpuTime() - cpu0
			var p50, p99 time.Duration
			if latency {
				var all []time.Duration
				for _, c := range readers {
					all = append(all, c.lat...)
				}
				slices.Sort(all)
				p50, p99 = percentile(all, 0.50), percentile(all, 0.99)
			}
			say("done cpu=%d p50=%d p99=%d", cpu, p50, p99)
		case <-quit:
		}
	}
	<-quit
	closeAll()
	reading.Wait()
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(float64(len(sorted))*p), len(sorted)-1)]
}

// loadConn is one raw HTTP/1.1 stream reader.
type loadConn struct {
	conn net.Conn
	body *bufio.Reader
	lat  []time.Duration
}

func dialStream(addr, path string) (*loadConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 32<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return &loadConn{conn: conn, body: bufio.NewReaderSize(resp.Body, 32<<10)}, nil
}

// read counts "data:" lines (every event has one) until the connection is
// closed, calling got with the running count.
func (c *loadConn) read(events int, latency bool, got func(n int)) {
	n := 0
	for {
		line, err := c.body.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		if latency && len(c.lat) < cap(c.lat) {
			now := time.Now().UnixNano()
			stamp := line[len("data: "):]
			if i := bytes.IndexByte(stamp, ' '); i > 0 {
				if sent, err := strconv.ParseInt(string(stamp[:i]), 10, 64); err == nil {
					c.lat = append(c.lat, time.Duration(now-sent))
				}
			}
		}
		n++
		if n <= events {
			got(n)
		}
	}
}

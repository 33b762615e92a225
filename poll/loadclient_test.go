package poll_test

// The client side of the loopback benchmarks in bench_test.go: a child
// process (this test binary re-run with -test.run=^TestBenchLoadClient$)
// holding raw HTTP/1.1 keep-alive connections, so that getrusage in the
// benchmark process measures the server alone and the clients do not
// compete inside the server's scheduler.
//
// Protocol: the benchmark passes the parameters in the environment; the
// child dials every connection and says "poll-bench ready" on its stdout,
// starts on a "go" line on its stdin, says "poll-bench done ..." when every
// connection has finished, and exits when its stdin ends.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Environment of the client process.
const (
	envClient   = "POLL_BENCH_CLIENT"   // "hold" or "catchup"; unset: TestBenchLoadClient skips
	envAddr     = "POLL_BENCH_ADDR"     // host:port
	envTarget   = "POLL_BENCH_TARGET"   // request target up to the cursor value, e.g. /lp?wait=60s&cursor=
	envConns    = "POLL_BENCH_CONNS"    // connections, one request in flight on each
	envCursors  = "POLL_BENCH_CURSORS"  // comma-separated: hold starts from the first; catchup picks among them
	envRequests = "POLL_BENCH_REQUESTS" // catchup: requests in all
)

// clientMode is what each connection does.
type clientMode string

const (
	// modeHold: ask, and when the answer comes ask again with the cursor
	// it carries, until the server closes the connection; record the
	// publish→response latency of every message received.
	modeHold clientMode = "hold"
	// modeCatchUp: ask for a cursor picked from the list, read the answer,
	// repeat, until the connections together have made the requests asked.
	modeCatchUp clientMode = "catchup"
)

type clientConfig struct {
	mode     clientMode
	conns    int
	target   string
	cursors  []string
	requests int
}

// loadClients is the client process, seen from the benchmark.
type loadClients struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // protocol lines from its stdout
	exited chan struct{} // closed when its stdout ends
}

// loadResult is what the client process reports when done.
type loadResult struct {
	responses     int           // responses read
	messages      int           // messages received (hold)
	cpu           time.Duration // the client process's CPU time from go to done
	p50, p99, max time.Duration // publish→response latency (hold)
}

// startLoadClients starts the client process and returns once it has
// dialed every connection. Nothing is sent before start.
func startLoadClients(tb testing.TB, addr string, cfg clientConfig) *loadClients {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestBenchLoadClient$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envClient+"="+string(cfg.mode),
		envAddr+"="+addr,
		envTarget+"="+cfg.target,
		envConns+"="+strconv.Itoa(cfg.conns),
		envCursors+"="+strings.Join(cfg.cursors, ","),
		envRequests+"="+strconv.Itoa(cfg.requests),
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
	c := &loadClients{cmd: cmd, stdin: stdin, lines: make(chan string, 16), exited: make(chan struct{})}
	go func() {
		defer close(c.exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "poll-bench "); ok {
				c.lines <- line
			}
		}
	}()
	if line := c.next(tb); line != "ready" {
		c.stop(tb)
		tb.Fatalf("client process said %q, want ready", line)
	}
	return c
}

// start lets the connections send their first requests.
func (c *loadClients) start(tb testing.TB) {
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		tb.Fatal(err)
	}
}

// next returns the client process's next protocol line. A minute without
// one fails the benchmark (a deadline, not a wait for something).
func (c *loadClients) next(tb testing.TB) string {
	tb.Helper()
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case line := <-c.lines:
		if strings.HasPrefix(line, "error ") {
			tb.Fatalf("client process: %s", line)
		}
		return line
	case <-c.exited:
		tb.Fatal("the client process ended early")
	case <-t.C:
		tb.Fatal("no word from the client process in a minute")
	}
	return ""
}

// waitDone waits for the client process's report.
func (c *loadClients) waitDone(tb testing.TB) loadResult {
	tb.Helper()
	line := c.next(tb)
	var r loadResult
	var cpu, p50, p99, maxLat int64
	if _, err := fmt.Sscanf(line, "done responses=%d messages=%d cpu=%d p50=%d p99=%d max=%d",
		&r.responses, &r.messages, &cpu, &p50, &p99, &maxLat); err != nil {
		tb.Fatalf("client process said %q, want done ...: %v", line, err)
	}
	r.cpu, r.p50, r.p99, r.max = time.Duration(cpu), time.Duration(p50), time.Duration(p99), time.Duration(maxLat)
	return r
}

// stop tells the client process to close its connections and exit, and
// waits for it.
func (c *loadClients) stop(tb testing.TB) {
	c.stdin.Close()
	kill := time.AfterFunc(30*time.Second, func() { _ = c.cmd.Process.Kill() })
	defer kill.Stop()
	go func() { // keep its stdout flowing until it exits
		for range c.lines {
		}
	}()
	<-c.exited
	if err := c.cmd.Wait(); err != nil {
		tb.Errorf("client process: %v", err)
	}
	close(c.lines)
}

// TestBenchLoadClient is not a test: it is the client process of the
// benchmarks, and does nothing unless POLL_BENCH_CLIENT is set.
func TestBenchLoadClient(t *testing.T) {
	mode := clientMode(os.Getenv(envClient))
	if mode == "" {
		t.Skip("the client process of the benchmarks; runs only under them")
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, "poll-bench "+format+"\n", args...)
		out.Flush()
	}
	cfg := clientConfig{mode: mode, target: os.Getenv(envTarget), cursors: strings.Split(os.Getenv(envCursors), ",")}
	cfg.conns, _ = strconv.Atoi(os.Getenv(envConns))
	cfg.requests, _ = strconv.Atoi(os.Getenv(envRequests))
	raiseFileLimit(t, cfg.conns+256)

	// stdin: "go", then its end when the benchmark is done with us.
	begin, quit := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "go" {
				close(begin)
			}
		}
		close(quit)
	}()

	conns := make([]*loadConn, cfg.conns)
	var dialed sync.WaitGroup
	var dialErr atomic.Pointer[error]
	sem := make(chan struct{}, 64)
	for i := range conns {
		dialed.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; dialed.Done() }()
			c, err := dialLoadConn(os.Getenv(envAddr))
			if err != nil {
				dialErr.CompareAndSwap(nil, &err)
				return
			}
			conns[i] = c
		}()
	}
	dialed.Wait()
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}
	defer closeAll()
	if p := dialErr.Load(); p != nil {
		say("error dial: %v", *p)
		<-quit
		return
	}
	say("ready")
	select {
	case <-begin:
	case <-quit:
		return
	}

	cpu0 := cpuTime()
	var served atomic.Int64 // catchup: requests claimed
	var failed atomic.Pointer[error]
	var running sync.WaitGroup
	for _, c := range conns {
		running.Go(func() {
			var err error
			switch cfg.mode {
			case modeHold:
				err = c.hold(cfg.target, cfg.cursors[0])
			case modeCatchUp:
				err = c.catchUp(cfg.target, cfg.cursors, cfg.requests, &served)
			default:
				err = fmt.Errorf("unknown mode %q", cfg.mode)
			}
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	running.Wait()
	cpu := cpuTime() - cpu0
	if p := failed.Load(); p != nil {
		say("error %v", *p)
		<-quit
		return
	}
	var lat []time.Duration
	responses := 0
	for _, c := range conns {
		lat = append(lat, c.lat...)
		responses += c.responses
	}
	slices.Sort(lat)
	var maxLat time.Duration
	if len(lat) > 0 {
		maxLat = lat[len(lat)-1]
	}
	say("done responses=%d messages=%d cpu=%d p50=%d p99=%d max=%d",
		responses, len(lat), cpu, percentile(lat, 0.50), percentile(lat, 0.99), maxLat)
	<-quit
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(float64(len(sorted))*p), len(sorted)-1)]
}

// loadConn is one raw HTTP/1.1 keep-alive connection with at most one
// request in flight. It understands exactly the responses the benchmark
// servers give: 200 with a Content-Length.
type loadConn struct {
	conn      net.Conn
	r         *bufio.Reader
	req, body []byte
	responses int
	lat       []time.Duration
}

func dialLoadConn(addr string) (*loadConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &loadConn{conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}, nil
}

// errClosedByServer: the server answered with Connection: close, or closed
// the connection between responses. Either ends a hold loop normally.
var errClosedByServer = errors.New("closed by the server")

// get sends GET target+cursor and returns the body of the 200 response,
// valid until the next call.
func (c *loadConn) get(target, cursor string) (body []byte, closing bool, err error) {
	c.req = append(c.req[:0], "GET "...)
	c.req = append(c.req, target...)
	c.req = append(c.req, cursor...)
	c.req = append(c.req, " HTTP/1.1\r\nHost: bench\r\n\r\n"...)
	if _, err := c.conn.Write(c.req); err != nil {
		return nil, false, errClosedByServer
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, false, errClosedByServer
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return nil, false, fmt.Errorf("GET %s%s: %q", target, cursor, bytes.TrimSpace(line))
	}
	n := -1
	for {
		if line, err = c.r.ReadSlice('\n'); err != nil {
			return nil, false, errClosedByServer
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			n = atoi(v)
		case bytes.EqualFold(k, []byte("Connection")):
			closing = bytes.EqualFold(v, []byte("close"))
		}
	}
	if n < 0 {
		return nil, false, fmt.Errorf("GET %s%s: a response without Content-Length", target, cursor)
	}
	c.body = slices.Grow(c.body[:0], n)[:n]
	if _, err := io.ReadFull(c.r, c.body); err != nil {
		return nil, false, errClosedByServer
	}
	c.responses++
	return c.body, closing, nil
}

func atoi(b []byte) int {
	n := 0
	for _, d := range b {
		if d < '0' || d > '9' {
			return -1
		}
		n = n*10 + int(d-'0')
	}
	return n
}

var (
	dataKey   = []byte(`"data":"`)
	cursorKey = []byte(`"cursor":"`)
)

// hold long-polls until the server closes the connection, recording for
// every message the time since the publisher stamped it.
func (c *loadConn) hold(target, cursor string) error {
	cur := []byte(cursor)
	for {
		body, closing, err := c.get(target, string(cur))
		if errors.Is(err, errClosedByServer) {
			return nil
		}
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for rest := body; ; {
			i := bytes.Index(rest, dataKey)
			if i < 0 {
				break
			}
			rest = rest[i+len(dataKey):]
			if end := bytes.IndexByte(rest, ' '); end > 0 {
				if stamp := atoi(rest[:end]); stamp > 0 {
					c.lat = append(c.lat, time.Duration(now-int64(stamp)))
				}
			}
		}
		i := bytes.LastIndex(body, cursorKey)
		if i < 0 {
			return fmt.Errorf("a response without a cursor: %q", body)
		}
		v := body[i+len(cursorKey):]
		cur = append(cur[:0], v[:bytes.IndexByte(v, '"')]...)
		if closing {
			return nil
		}
	}
}

// catchUp asks for cursors picked from the list until the connections
// together have claimed requests of them.
func (c *loadConn) catchUp(target string, cursors []string, requests int, claimed *atomic.Int64) error {
	for {
		i := int(claimed.Add(1))
		if i > requests {
			return nil
		}
		body, _, err := c.get(target, cursors[(i*7)%len(cursors)])
		if err != nil {
			return err
		}
		if len(body) == 0 {
			return errors.New("an empty response")
		}
	}
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

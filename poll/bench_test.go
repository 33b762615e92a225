package poll_test

// Loopback benchmarks of long polling. The clients run in a child process
// (see loadclient_test.go): raw HTTP/1.1 keep-alive connections, one
// request in flight on each, so that getrusage here measures the server
// alone and the clients do not compete inside the server's scheduler.
//
//	go test -run '^$' -bench 'LongPollLatency|LongPollCatchUp' -benchmem -count 3 ./poll
//	go test -run '^$' -bench HeldRequestMemory -benchtime 5x -count 3 ./poll
//
// BenchmarkLongPollLatency: 1,000 (and 100) requests held; each iteration
// publishes one message, stamped with the time of publishing, once every
// request is held again. Every client reads its response, computes the
// delta on its clock (the same machine's), and asks again with the cursor
// it got.
//   - p50-ms, p99-ms, max-ms: publish→response latency over all responses.
//   - ns-cpu/resp: the server process's CPU time (user+sys) per response;
//     client-ns-cpu/resp is the client process's.
//   - B/resp, allocs/resp: the server's heap allocation per response.
//
// The baseline is a long poll stripped to the limit: no broker, no
// subscription, no timer; the newest message is kept encoded, and a held
// request waits on a channel that the next publish closes. What it costs is
// net/http and the loopback waking and answering every held request at
// once, and that is what bounds the p99: the last of a burst of N
// responses waits for the CPU of the N-1 before it, server and client.
//
// BenchmarkLongPollCatchUp: clients that are behind; every request gets
// max=100 retained messages at once. req/s and ns-cpu/req, against a
// baseline handler that writes the same response, pre-encoded.
//
// BenchmarkHeldRequestMemory: what 1,000 held requests add to the server
// process (heap after a collection, goroutine stacks, goroutines), against
// the net/http floor: a handler that only blocks on its request's context.
// phase=first holds each connection's first request; phase=rehold the next
// one, after a response on the same connection (the steady state).
// part=subscription is a subscription alone, in process: the other term of
// "a held request costs net/http plus a subscription". Use a fixed
// -benchtime (5x): the first iterations in a process also grow net/http's
// pools.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
)

const (
	heldClients      = 1000
	benchTopic       = "bench"
	benchMessageSize = 128
)

// counter counts events (a request starting to hold) and lets the
// benchmark wait, without polling, until a count is reached.
type counter struct {
	mu      sync.Mutex
	n       int
	want    int           // guarded by mu
	reached chan struct{} // closed when n reaches want; guarded by mu
}

func (c *counter) add() {
	c.mu.Lock()
	c.n++
	if c.reached != nil && c.n >= c.want {
		close(c.reached)
		c.reached = nil
	}
	c.mu.Unlock()
}

// waitFor waits until the count reaches n, failing if the client process
// ends or a minute passes first.
func (c *counter) waitFor(tb testing.TB, n int, cl *loadClients) {
	tb.Helper()
	c.mu.Lock()
	if c.n >= n {
		c.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	c.want, c.reached = n, ch
	c.mu.Unlock()
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case <-ch:
	case line := <-cl.lines:
		tb.Fatalf("client process said %q while requests were being held", line)
	case <-cl.exited:
		tb.Fatal("the client process ended early")
	case <-t.C:
		c.mu.Lock()
		got := c.n
		c.mu.Unlock()
		tb.Fatalf("%d requests held after a minute, want %d", got, n)
	}
}

// countingClock is the real clock, counting the wait timers armed: a
// long-poll request arms one as it starts to hold.
type countingClock struct {
	clock.Real
	armed *counter
}

func (c countingClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.armed.add()
	return c.Real.AfterFunc(d, f)
}

// holdServer is what the latency and memory benchmarks run: a handler
// holding requests, a way to publish, and the count of requests that
// started to hold.
type holdServer struct {
	handler http.Handler
	publish func(data []byte) error
	held    *counter
	first   string       // the cursor of "now", where clients start
	stop    func() error // after the connections are closed: waits for the handlers
}

type holdImpl struct {
	name  string
	start func() *holdServer
}

var (
	implLongPoll = holdImpl{"longpoll", startLongPoll}
	implBaseline = holdImpl{"baseline", startChanLongPoll}
	implFloor    = holdImpl{"nethttp-floor", startFloor}
)

// startLongPoll: a LongPoll over a memory broker with history, as an
// application would configure it.
func startLongPoll() *holdServer {
	broker := pubsub.NewBroker(pubsub.History(1000, 0))
	held := new(counter)
	lp := poll.NewLongPoll(broker, func(*http.Request) (string, error) { return benchTopic, nil },
		&poll.LongPollOptions{Clock: countingClock{armed: held}})
	head, _ := broker.Head(context.Background())
	return &holdServer{
		handler: lp,
		publish: func(data []byte) error {
			_, err := broker.Publish(context.Background(), pubsub.Message{Topic: benchTopic, Data: data})
			return err
		},
		held:  held,
		first: string(head),
		stop: func() error {
			defer broker.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return lp.Shutdown(ctx)
		},
	}
}

// chanLongPoll is the near-limit baseline of a wake-up: a long poll with
// no broker, no subscription and no timer. It keeps only the newest
// message, encoded as the response; a request whose cursor (a decimal
// sequence number) is older gets it at once, one that is current waits on
// the channel the next publish closes.
type chanLongPoll struct {
	held *counter
	reqs sync.WaitGroup

	mu   sync.Mutex
	seq  uint64        // guarded by mu
	body []byte        // guarded by mu
	next chan struct{} // closed by the next publish; guarded by mu
}

func startChanLongPoll() *holdServer {
	s := &chanLongPoll{held: new(counter), next: make(chan struct{})}
	return &holdServer{handler: s, publish: s.publish, held: s.held, first: "0",
		stop: func() error { s.reqs.Wait(); return nil }}
}

func (s *chanLongPoll) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.reqs.Add(1)
	defer s.reqs.Done()
	cursor, err := strconv.ParseUint(r.URL.Query().Get("cursor"), 10, 64)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	seq, body, next := s.seq, s.body, s.next
	s.mu.Unlock()
	if cursor >= seq {
		s.held.add()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
		body = s.body
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func (s *chanLongPoll) publish(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	c := strconv.AppendUint(nil, s.seq, 10)
	b := append([]byte(`{"messages":[{"cursor":"`), c...)
	b = append(b, `","data":"`...)
	b = append(b, data...)
	b = append(b, `"}],"cursor":"`...)
	b = append(b, c...)
	s.body = append(b, "\"}\n"...)
	close(s.next)
	s.next = make(chan struct{})
	return nil
}

// startFloor: net/http holding a request and doing nothing else, the
// floor of what a held request costs. A request with cursor 1 blocks on
// its context; one with cursor 0 waits for publish and is answered with
// cursor 1, so that the floor too can be measured on connections that
// have served a response before.
func startFloor() *holdServer {
	held := new(counter)
	var reqs sync.WaitGroup
	gate := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs.Add(1)
		defer reqs.Done()
		held.add()
		if r.URL.Query().Get("cursor") != "0" {
			<-r.Context().Done()
			return
		}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		body := `{"messages":[],"cursor":"1"}` + "\n"
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	})
	var once sync.Once
	return &holdServer{handler: h, held: held, first: "0",
		publish: func([]byte) error { once.Do(func() { close(gate) }); return nil },
		stop:    func() error { reqs.Wait(); return nil }}
}

// loopbackServer serves h on 127.0.0.1 until close, which closes every
// connection, then waits for Serve to return.
type loopbackServer struct {
	addr   string
	srv    *http.Server
	served chan error
}

func serveLoopback(tb testing.TB, h http.Handler) *loopbackServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &loopbackServer{addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, served: make(chan error, 1)}
	go func() { s.served <- s.srv.Serve(ln) }()
	return s
}

func (s *loopbackServer) close(tb testing.TB) {
	if err := s.srv.Close(); err != nil {
		tb.Errorf("server close: %v", err)
	}
	if err := <-s.served; !errors.Is(err, http.ErrServerClosed) {
		tb.Errorf("serve: %v", err)
	}
}

// stamped returns a benchMessageSize message that starts with the time it
// was made, for the clients to compute the latency.
func stamped() []byte {
	b := make([]byte, 0, benchMessageSize)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, ' ')
	for len(b) < benchMessageSize {
		b = append(b, 'x')
	}
	return b
}

func BenchmarkLongPollLatency(b *testing.B) {
	raiseFileLimit(b, 2*heldClients+256)
	for _, held := range []int{100, heldClients} {
		for _, impl := range []holdImpl{implLongPoll, implBaseline} {
			b.Run(fmt.Sprintf("impl=%s/held=%d", impl.name, held), func(b *testing.B) {
				benchLatency(b, impl, held)
			})
		}
	}
}

// benchLatency: each iteration waits until every client's request is held,
// publishes one stamped message, and goes on to the next once all held
// requests have been answered and asked again.
func benchLatency(b *testing.B, impl holdImpl, held int) {
	s := impl.start()
	srv := serveLoopback(b, s.handler)
	cl := startLoadClients(b, srv.addr, clientConfig{
		mode: modeHold, conns: held, target: "/lp?wait=60s&cursor=", cursors: []string{s.first},
	})
	cl.start(b)
	s.held.waitFor(b, held, cl)

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		if err := s.publish(stamped()); err != nil {
			b.Fatal(err)
		}
		s.held.waitFor(b, held*(i+2), cl)
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	runtime.ReadMemStats(&ms1)

	srv.close(b)
	if err := s.stop(); err != nil {
		b.Errorf("stop: %v", err)
	}
	res := cl.waitDone(b)
	cl.stop(b)
	if want := b.N * held; res.messages != want {
		b.Fatalf("clients received %d messages in %d responses, want %d", res.messages, res.responses, want)
	}
	n := float64(res.messages)
	b.ReportMetric(float64(res.p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(res.p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(res.max.Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "ns-cpu/resp")
	b.ReportMetric(float64(res.cpu.Nanoseconds())/n, "client-ns-cpu/resp")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/resp")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/resp")
}

func BenchmarkLongPollCatchUp(b *testing.B) {
	const (
		conns    = 16
		retained = 1000
		batch    = 100 // the max parameter
	)
	broker := pubsub.NewBroker(pubsub.History(10_000, 0))
	defer broker.Close()
	var cursors []string
	for i := range retained {
		c, err := broker.Publish(context.Background(), pubsub.Message{Topic: benchTopic,
			Data: fmt.Appendf(nil, `{"n":%d,"pad":"0123456789abcdef0123456789abcdef0123456789abcdef"}`, i)})
		if err != nil {
			b.Fatal(err)
		}
		if i < retained-batch { // every request gets max messages
			cursors = append(cursors, string(c))
		}
	}
	lp := poll.NewLongPoll(broker, func(*http.Request) (string, error) { return benchTopic, nil }, nil)
	defer lp.Shutdown(context.Background())

	// The baseline answers with what the long poll sends for one of the
	// cursors, as bytes.
	probe := serveLoopback(b, lp)
	resp, err := http.Get(fmt.Sprintf("http://%s/lp?max=%d&cursor=%s", probe.addr, batch, cursors[0]))
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	probe.close(b)
	static := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})

	run := func(b *testing.B, h http.Handler) {
		srv := serveLoopback(b, h)
		defer srv.close(b)
		cl := startLoadClients(b, srv.addr, clientConfig{
			mode: modeCatchUp, conns: conns, target: fmt.Sprintf("/lp?max=%d&cursor=", batch),
			cursors: cursors, requests: b.N,
		})
		defer cl.stop(b)
		b.ResetTimer()
		start, cpu0 := time.Now(), cpuTime()
		cl.start(b)
		res := cl.waitDone(b)
		elapsed, cpu := time.Since(start), cpuTime()-cpu0
		b.StopTimer()
		if res.responses != b.N {
			b.Fatalf("clients read %d responses, want %d", res.responses, b.N)
		}
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "ns-cpu/req")
		b.ReportMetric(float64(res.cpu.Nanoseconds())/float64(b.N), "client-ns-cpu/req")
	}
	b.Run(fmt.Sprintf("impl=baseline/max=%d", batch), func(b *testing.B) { run(b, static) })
	b.Run(fmt.Sprintf("impl=longpoll/max=%d", batch), func(b *testing.B) { run(b, lp) })
}

func BenchmarkHeldRequestMemory(b *testing.B) {
	raiseFileLimit(b, 2*heldClients+256)
	// phase=first: each connection's first request is held.
	// phase=rehold: each connection has served a response (one publish)
	// and its next request is held: the steady state of long polling.
	for _, phase := range []string{"first", "rehold"} {
		for _, impl := range []holdImpl{implFloor, implLongPoll} {
			b.Run(fmt.Sprintf("impl=%s/phase=%s/held=%d", impl.name, phase, heldClients), func(b *testing.B) {
				benchHeldMemory(b, impl, phase == "rehold")
			})
		}
	}
	b.Run("part=subscription", func(b *testing.B) {
		broker := pubsub.NewBroker(pubsub.History(1000, 0))
		defer broker.Close()
		head, _ := broker.Head(context.Background())
		subs := make([]pubsub.Subscription, heldClients)
		var heap float64
		for range b.N {
			before := measureMemory()
			for i := range subs {
				s, err := broker.Subscribe(context.Background(), benchTopic, pubsub.Overflow(pubsub.Disconnect), pubsub.After(head))
				if err != nil {
					b.Fatal(err)
				}
				subs[i] = s
			}
			after := measureMemory()
			for _, s := range subs {
				s.Close()
			}
			clear(subs)
			heap += float64(after.heap-before.heap) / heldClients
		}
		b.ReportMetric(heap/float64(b.N), "heap-B/held")
	})
}

func benchHeldMemory(b *testing.B, impl holdImpl, rehold bool) {
	var heap, stack, goroutines float64
	for range b.N {
		s := impl.start()
		srv := serveLoopback(b, s.handler)
		before := measureMemory()
		cl := startLoadClients(b, srv.addr, clientConfig{
			mode: modeHold, conns: heldClients, target: "/lp?wait=60s&cursor=", cursors: []string{s.first},
		})
		cl.start(b)
		s.held.waitFor(b, heldClients, cl)
		if rehold {
			if err := s.publish(stamped()); err != nil {
				b.Fatal(err)
			}
			s.held.waitFor(b, 2*heldClients, cl)
		}
		after := measureMemory()
		srv.close(b)
		if err := s.stop(); err != nil {
			b.Errorf("stop: %v", err)
		}
		cl.waitDone(b)
		cl.stop(b)
		heap += float64(after.heap-before.heap) / heldClients
		stack += float64(after.stack-before.stack) / heldClients
		goroutines += float64(after.goroutines-before.goroutines) / heldClients
	}
	n := float64(b.N)
	b.ReportMetric(heap/n, "heap-B/held")
	b.ReportMetric(stack/n, "stack-B/held")
	b.ReportMetric(goroutines/n, "goroutines/held")
}

type memory struct {
	heap, stack, goroutines int64
}

// measureMemory collects garbage and reads what is left: live heap bytes,
// goroutine stacks and goroutines.
func measureMemory() memory {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{heap: int64(ms.HeapAlloc), stack: int64(ms.StackInuse), goroutines: int64(runtime.NumGoroutine())}
}

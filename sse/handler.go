package sse

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/drain"
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults of the Handler's options.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultRetry        = 3 * time.Second
	DefaultBuffer       = 1024
	DefaultWriteTimeout = 10 * time.Second
	DefaultMaxStreams   = 100_000
)

// GapEvent is the type of the event the Handler sends when the stream
// cannot continue exactly where the client left off: history no longer
// reaches its Last-Event-ID. Its data is a JSON object {"reason": "...",
// "after": "<the client's last event id>"}. A page listens for it with
// addEventListener("gap", ...) and reloads its state.
const GapEvent = "gap"

// Option configures a Handler.
type Option func(*config)

type config struct {
	heartbeat    time.Duration
	retry        time.Duration
	maxLifetime  time.Duration
	buffer       int
	writeTimeout time.Duration
	maxStreams   int
	eventType    func(*pubsub.Message) string
	clock        clock.Clock
}

// Heartbeat sets how often an idle stream gets a comment line, so that
// proxies and load balancers do not close it and a dead client is found.
// Default DefaultHeartbeat (15s); zero or negative turns heartbeats off.
func Heartbeat(d time.Duration) Option { return func(c *config) { c.heartbeat = d } }

// Retry sets the reconnection delay the stream asks of clients ("retry:"
// when the stream opens). Default DefaultRetry (3s).
func Retry(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.retry = d
		}
	}
}

// MaxLifetime ends every stream after at most d, jittered down by up to a
// quarter so a fleet of clients does not reconnect at once; clients resume
// from their last event id. Useful to rebalance connections across nodes.
// Default 0: streams last as long as the client stays.
func MaxLifetime(d time.Duration) Option { return func(c *config) { c.maxLifetime = d } }

// Buffer bounds how many events a stream may have waiting while the client
// reads slowly. Past it the stream is ended (the subscription's Disconnect
// policy) and the client resumes from its last event id, losslessly when the
// broker retains history: a slow client never grows the server's memory.
// Default DefaultBuffer.
func Buffer(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.buffer = n
		}
	}
}

// WriteTimeout bounds each write to a client; a client that stops reading
// is disconnected after it. Default DefaultWriteTimeout (10s).
func WriteTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.writeTimeout = d
		}
	}
}

// MaxStreams bounds the open streams of the handler; past it a request
// gets 503 with Retry-After. Default DefaultMaxStreams.
func MaxStreams(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxStreams = n
		}
	}
}

// EventType names each message's event (the "event:" field), for pages that
// use addEventListener(type, ...). Default: no name, so every event reaches
// onmessage. A name with a line break is dropped.
func EventType(f func(m *pubsub.Message) string) Option {
	return func(c *config) { c.eventType = f }
}

// WithClock sets the clock behind heartbeats and lifetimes. Default: the
// real clock.
func WithClock(c clock.Clock) Option { return func(cfg *config) { cfg.clock = c } }

// Handler streams a pubsub subscription to EventSource clients. Each
// request subscribes to the pattern its TopicFunc returns, after the
// client's Last-Event-ID header (or lastEventId query parameter) when it
// has one, and streams every message as an event whose id is the message's
// cursor and whose data is the message's data.
//
// Each message is encoded once however many streams send it, and a stream
// writes everything that queued up while it was busy in one write and one
// flush. A stream holds no goroutine of its own beyond net/http's.
type Handler struct {
	sub   pubsub.Subscriber
	topic pubsub.TopicFunc
	cfg   config
	clock clock.Clock
	key   *encodingKey // this handler's encoding in Message.Encoded

	base     context.Context // canceled by Shutdown
	shutdown context.CancelFunc
	streams  drain.Group // refused and waited for by Shutdown
	open     atomic.Int64
}

type encodingKey struct{}

// NewHandler returns a Handler streaming from sub. topic decides each
// request's pattern and is its authorization hook (see pubsub.TopicFunc):
// its error refuses the request with problem details before any byte of
// the stream is written.
func NewHandler(sub pubsub.Subscriber, topic pubsub.TopicFunc, opts ...Option) *Handler {
	cfg := config{
		heartbeat:    DefaultHeartbeat,
		retry:        DefaultRetry,
		buffer:       DefaultBuffer,
		writeTimeout: DefaultWriteTimeout,
		maxStreams:   DefaultMaxStreams,
	}
	for _, o := range opts {
		o(&cfg)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Handler{
		sub: sub, topic: topic, cfg: cfg, clock: clock.Or(cfg.clock),
		key: &encodingKey{}, base: base, shutdown: cancel,
	}
}

// Streams reports how many streams are open.
func (h *Handler) Streams() int { return int(h.open.Load()) }

// Shutdown ends every open stream and refuses new ones (503), then waits
// until their handlers have returned or ctx ends. http.Server.Shutdown does
// not end streams by itself: call this first, or register it with
// Server.RegisterOnShutdown. Clients reconnect (to another node, or to
// this one when it is back) and resume from their last event id.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.streams.Close()
	h.shutdown()
	return h.streams.Wait(ctx)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, "an event stream is read with GET"))
		return
	}
	if !h.streams.Enter() {
		unavailable(w, "the server is shutting down")
		return
	}
	defer h.streams.Leave()
	pattern, err := h.topic(r)
	if err != nil {
		problem.Write(w, pubsub.RefusalProblem(err))
		return
	}
	if err := pubsub.ValidatePattern(pattern); err != nil {
		problem.Write(w, problem.New(http.StatusBadRequest, err.Error()))
		return
	}
	if n := h.open.Add(1); n > int64(h.cfg.maxStreams) {
		h.open.Add(-1)
		unavailable(w, "too many open streams")
		return
	}
	defer h.open.Add(-1)

	ctx := r.Context()
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("lastEventId")
	}
	opts := []pubsub.SubscribeOption{pubsub.Buffer(h.cfg.buffer), pubsub.Overflow(pubsub.Disconnect)}
	var gap *pubsub.GapError
	sub, err := h.sub.Subscribe(ctx, pattern, append(opts, pubsub.After(pubsub.Cursor(last)))...)
	if errors.Is(err, pubsub.ErrInvalidCursor) {
		// Not a cursor of ours: the client cannot resume exactly. Start
		// live and say so.
		gap = &pubsub.GapError{After: pubsub.Cursor(last), Reason: "unknown cursor"}
		sub, err = h.sub.Subscribe(ctx, pattern, opts...)
	}
	if err != nil {
		switch {
		case errors.Is(err, pubsub.ErrClosed):
			unavailable(w, "the broker is closed")
		case ctx.Err() != nil:
		default:
			unavailable(w, "cannot subscribe: "+err.Error())
		}
		return
	}
	defer sub.Close()
	// Shutdown and the lifetime end the stream by closing its subscription
	// (Next then returns ErrClosed): no context of the stream's own, which
	// an idle stream would otherwise hold.
	stop := context.AfterFunc(h.base, func() { sub.Close() })
	defer stop()

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	s := &stream{h: h, w: w, rc: http.NewResponseController(w), sub: sub}
	var pre [64]byte
	b := append(pre[:0], "retry: "...)
	b = appendMillis(b, h.cfg.retry)
	b = append(b, "\n\n"...)
	if gap != nil {
		b = appendGap(b, gap)
	}
	if s.write(b) != nil || s.flush() != nil {
		return
	}
	if h.cfg.maxLifetime > 0 {
		life := h.cfg.maxLifetime - time.Duration(rand.Int64N(int64(h.cfg.maxLifetime/4)+1))
		t := h.clock.AfterFunc(life, func() { sub.Close() })
		defer t.Stop()
	}
	s.run(ctx)
}

func unavailable(w http.ResponseWriter, detail string) {
	w.Header().Set("Retry-After", "1")
	problem.Write(w, problem.New(http.StatusServiceUnavailable, detail))
}

// stream is one open event stream.
type stream struct {
	h   *Handler
	w   http.ResponseWriter
	rc  *http.ResponseController
	sub pubsub.Subscription
}

// batches lends streams a buffer for the backlog they drain, only while
// they write, so an idle stream holds none.
var batches = sync.Pool{New: func() any { b := make([]pubsub.Message, 0, 128); return &b }}

// outs lends streams the buffer they write a batch from.
var outs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// Bounds of the write path: a stream takes at most maxBatchBytes of its
// backlog for one write, and buffers larger than maxPooledOut are not kept.
const (
	maxBatchBytes = 128 << 10
	maxPooledOut  = 256 << 10
)

func (s *stream) run(ctx context.Context) {
	hb := s.h.cfg.heartbeat
	var wait context.Context = ctx
	var beat clock.Timer
	arm := func() {
		var cancel context.CancelFunc
		wait, cancel = context.WithCancel(ctx)
		beat = s.h.clock.AfterFunc(hb, cancel)
	}
	if hb > 0 {
		arm()
		defer func() { beat.Stop() }()
	}
	for {
		m, err := s.sub.Next(wait)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return // client gone, lifetime over, or Shutdown
		case wait.Err() != nil: // heartbeat due
			if s.write(AppendComment(nil, "")) != nil || s.flush() != nil {
				return
			}
			arm()
			continue
		case errors.Is(err, pubsub.ErrGap):
			var g *pubsub.GapError
			errors.As(err, &g)
			if s.write(appendGap(nil, g)) != nil || s.flush() != nil {
				return
			}
			continue
		default:
			// ErrSlowConsumer: the client resumes from its last event id.
			// ErrClosed: the broker is gone.
			return
		}
		// The event and the backlog behind it, in one buffer: one Write
		// (which net/http passes through its buffers in one piece), one
		// write deadline, one flush.
		bp := batches.Get().(*[]pubsub.Message)
		more := append((*bp)[:0], m) // &m would move m to the heap
		m = pubsub.Message{}
		op := outs.Get().(*[]byte)
		out := (*op)[:0]
		for {
			for i := range more {
				out = append(out, s.encode(&more[i])...)
				more[i] = pubsub.Message{}
			}
			if len(out) >= maxBatchBytes {
				break
			}
			var derr error
			more, derr = pubsub.Drain(s.sub, more[:0])
			if errors.Is(derr, pubsub.ErrGap) {
				// Reported once: it must reach the client in its place.
				var g *pubsub.GapError
				errors.As(derr, &g)
				out = appendGap(out, g)
				continue
			}
			if len(more) == 0 {
				break // nothing waiting, or the subscription ended: Next says which
			}
		}
		*bp = more[:0]
		batches.Put(bp)
		werr := s.write(out)
		if cap(out) <= maxPooledOut {
			*op = out[:0]
			outs.Put(op)
		}
		if werr != nil || s.flush() != nil {
			return
		}
		if hb > 0 && !beat.Reset(hb) {
			arm() // it fired while we wrote: a fresh wait context
		}
	}
}

func (s *stream) encode(m *pubsub.Message) []byte {
	return m.Encoded(s.h.key, s.h.encodeMessage)
}

func (h *Handler) encodeMessage(m *pubsub.Message) []byte {
	typ := ""
	if h.cfg.eventType != nil {
		typ = h.cfg.eventType(m)
		for i := 0; i < len(typ); i++ {
			if typ[i] == '\r' || typ[i] == '\n' {
				typ = ""
				break
			}
		}
	}
	id := string(m.Cursor)
	for i := 0; i < len(id); i++ {
		if id[i] == '\r' || id[i] == '\n' || id[i] == 0 {
			id = "" // never from our brokers; never write a broken event
			break
		}
	}
	n := len(id) + len(typ) + len(m.Data) + 32
	return appendEvent(make([]byte, 0, n), id, typ, m.Data, 0)
}

func (s *stream) write(b []byte) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.h.cfg.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	_, err := s.w.Write(b)
	return err
}

func (s *stream) flush() error { return s.rc.Flush() }

func appendGap(dst []byte, g *pubsub.GapError) []byte {
	data, _ := json.Marshal(struct {
		Reason string `json:"reason"`
		After  string `json:"after,omitempty"`
	}{g.Reason, string(g.After)})
	return appendEvent(dst, "", GapEvent, data, 0)
}

func appendMillis(dst []byte, d time.Duration) []byte {
	ms := max(d.Milliseconds(), 0)
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + ms%10)
		ms /= 10
		if ms == 0 {
			break
		}
	}
	return append(dst, tmp[i:]...)
}

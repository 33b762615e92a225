package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults of the Client's options.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultClientBuffer   = 256
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Errors of the Client.
var (
	// ErrGap is pubsub.ErrGap: Next reports a *GapError with it.
	ErrGap = pubsub.ErrGap
	// ErrClientClosed: the client was closed or its context ended.
	ErrClientClosed = errors.New("push: client closed")
	// ErrTimeout: a request got no reply within the request timeout.
	ErrTimeout = errors.New("push: request timed out")
	// ErrDisconnected: the connection dropped before the reply came. The
	// request may or may not have been handled.
	ErrDisconnected = errors.New("push: disconnected before the reply")
)

// GapError is what Next returns when the server cannot continue a
// subscription exactly after the client's cursor: history no longer
// reaches it (or messages were dropped, Reason "dropped"). It is a signal,
// not the end: Next goes on with what follows. errors.Is(err, ErrGap)
// reports true.
type GapError struct {
	Sub    string // the subscription's pattern; "" for the connection
	After  pubsub.Cursor
	Reason string
}

func (e *GapError) Error() string {
	return fmt.Sprintf("push: gap in %q after %q (%s)", e.Sub, e.After, e.Reason)
}

// Is makes errors.Is(err, ErrGap) true.
func (e *GapError) Is(target error) bool { return target == ErrGap }

// ReplyError is the server's refusal of a request: its "error" message.
type ReplyError struct{ Message string }

func (e *ReplyError) Error() string { return e.Message }

// Message is a message the client received. Sub, Topic and Cursor are set
// for messages of a subscription, empty for messages sent to the
// connection, its user or everyone.
type Message struct {
	Sub    string
	Topic  string
	Cursor pubsub.Cursor
	Data   []byte
}

// ClientOption configures Connect and Dial.
type ClientOption func(*clientConfig)

type clientConfig struct {
	header         http.Header
	httpClient     *http.Client
	readLimit      int
	dial           func(ctx context.Context) (Conn, error)
	backoff        backoff.Policy
	requestTimeout time.Duration
	buffer         int
	clock          clock.Clock
}

func newClientConfig(opts []ClientOption) clientConfig {
	cfg := clientConfig{
		readLimit:      DefaultClientReadLimit,
		backoff:        backoff.Policy{Base: DefaultMinBackoff, Max: DefaultMaxBackoff},
		requestTimeout: DefaultRequestTimeout,
		buffer:         DefaultClientBuffer,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// WithHeader adds headers to the handshake (cookies, Authorization).
func WithHeader(h http.Header) ClientOption { return func(c *clientConfig) { c.header = h } }

// WithHTTPClient sets the HTTP client of the handshake. Default
// http.DefaultClient.
func WithHTTPClient(hc *http.Client) ClientOption { return func(c *clientConfig) { c.httpClient = hc } }

// ClientReadLimit bounds each frame the client reads. Default
// DefaultClientReadLimit (4 MiB).
func ClientReadLimit(n int) ClientOption { return func(c *clientConfig) { positive(n, &c.readLimit) } }

// WithDialer replaces the WebSocket transport: Connect calls dial for each
// connection (an in-memory Hub.Pipe in tests). The URL is then unused.
func WithDialer(dial func(ctx context.Context) (Conn, error)) ClientOption {
	return func(c *clientConfig) { c.dial = dial }
}

// Backoff bounds the delay before each reconnection attempt: exponential
// from min, doubling up to max, each delay drawn uniformly below its
// ceiling (full jitter). Defaults DefaultMinBackoff and DefaultMaxBackoff.
func Backoff(minDelay, maxDelay time.Duration) ClientOption {
	return func(c *clientConfig) {
		positive(minDelay, &c.backoff.Base)
		positive(maxDelay, &c.backoff.Max)
	}
}

// RequestTimeout bounds how long Request and Subscribe wait for the reply.
// Default DefaultRequestTimeout.
func RequestTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { positive(d, &c.requestTimeout) }
}

// ClientBuffer bounds the messages received but not yet taken with Next.
// When it is full the client stops reading, the server's queue for it
// fills, and the server disconnects it as a slow consumer; it then
// reconnects and resumes by cursor. Default DefaultClientBuffer.
func ClientBuffer(n int) ClientOption { return func(c *clientConfig) { positive(n, &c.buffer) } }

// WithClientClock sets the clock of request timeouts and backoff. Default:
// the real clock.
func WithClientClock(c clock.Clock) ClientOption { return func(cfg *clientConfig) { cfg.clock = c } }

// Client is a connection to a Hub that survives disconnections: it
// reconnects with exponential backoff and full jitter, subscribes again
// after each reconnection, after the cursor of the last message it
// received on each subscription, so that nothing is missed or repeated
// (or a gap is reported when history no longer reaches). It ends when its
// context ends or Close is called.
//
// All methods are safe for concurrent use.
type Client struct {
	cfg   clientConfig
	clock clock.Clock
	ctx   context.Context
	stop  context.CancelFunc
	in    chan item
	done  chan struct{} // closed when the connection loop has ended
	err   error         // why it ended; written before done is closed

	mu      sync.Mutex
	conn    Conn                     // nil while disconnected; guarded by mu
	up      chan struct{}            // closed while conn is set; guarded by mu
	connID  string                   // guarded by mu
	subs    map[string]pubsub.Cursor // pattern → last cursor; guarded by mu
	pending map[string]chan result   // request id → reply; guarded by mu
	nextID  uint64                   // guarded by mu
}

type item struct {
	m   Message
	err error
}

type result struct {
	data []byte
	err  error
}

// Connect connects to the hub at url (ws:// or wss://) and keeps the
// connection up until ctx ends or Close is called. The first connection
// is made before it returns: its failure is returned.
func Connect(ctx context.Context, url string, opts ...ClientOption) (*Client, error) {
	cfg := newClientConfig(opts)
	if cfg.dial == nil {
		cfg.dial = func(ctx context.Context) (Conn, error) { return Dial(ctx, url, opts...) }
	}
	conn, err := cfg.dial(ctx)
	if err != nil {
		return nil, err
	}
	cctx, stop := context.WithCancel(ctx)
	c := &Client{
		cfg: cfg, clock: clock.Or(cfg.clock), ctx: cctx, stop: stop,
		in: make(chan item, cfg.buffer), done: make(chan struct{}),
		up: make(chan struct{}), subs: make(map[string]pubsub.Cursor),
		pending: make(map[string]chan result),
	}
	go c.run(conn)
	return c, nil
}

// Close closes the connection and stops reconnecting. It waits for the
// client's goroutine.
func (c *Client) Close() error {
	c.stop()
	<-c.done
	return nil
}

// ConnID returns the id the hub gave the current connection ("" before
// its welcome arrives or while disconnected).
func (c *Client) ConnID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connID
}

// Next returns the next message, blocking until there is one. A
// *GapError (errors.Is ErrGap) is a signal, not the end. After the client
// ends it returns ErrClientClosed, or the error that ended it (a *DialError
// refusal).
func (c *Client) Next(ctx context.Context) (Message, error) {
	select {
	case it := <-c.in:
		return it.m, it.err
	default:
	}
	select {
	case it := <-c.in:
		return it.m, it.err
	case <-c.done:
		return Message{}, c.err
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Subscribe subscribes to pattern, after cursor when it is not empty
// (replaying what was missed), and waits for the server's
// acknowledgement. The subscription survives reconnections.
func (c *Client) Subscribe(ctx context.Context, pattern string, after pubsub.Cursor) error {
	c.mu.Lock()
	c.subs[pattern] = after
	c.mu.Unlock()
	_, err := c.request(ctx, TypeSubscribe, pattern, after, nil)
	var re *ReplyError
	if errors.As(err, &re) {
		c.mu.Lock()
		delete(c.subs, pattern)
		c.mu.Unlock()
	}
	return err
}

// Unsubscribe ends the subscription to pattern.
func (c *Client) Unsubscribe(ctx context.Context, pattern string) error {
	c.mu.Lock()
	delete(c.subs, pattern)
	c.mu.Unlock()
	_, err := c.request(ctx, TypeUnsubscribe, pattern, "", nil)
	return err
}

// Send sends data to the server's message handler without waiting for a
// reply. It waits for a connection if there is none.
func (c *Client) Send(ctx context.Context, data []byte) error {
	conn, err := c.current(ctx)
	if err != nil {
		return err
	}
	return conn.Write(ctx, encodeRequest(TypeSend, "", "", "", data))
}

// Request sends data to the server's message handler and waits for its
// reply, at most the request timeout: ErrTimeout then, ErrDisconnected if
// the connection dropped first, a *ReplyError if the server answered with
// an error.
func (c *Client) Request(ctx context.Context, data []byte) ([]byte, error) {
	return c.request(ctx, TypeSend, "", "", data)
}

func (c *Client) request(ctx context.Context, typ, topic string, after pubsub.Cursor, data []byte) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := c.clock.AfterFunc(c.cfg.requestTimeout, cancel)
	defer t.Stop()
	conn, err := c.current(ctx)
	if err != nil {
		return nil, c.timeoutErr(ctx, t, err)
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := conn.Write(ctx, encodeRequest(typ, id, topic, string(after), data)); err != nil {
		return nil, c.timeoutErr(ctx, t, err)
	}
	select {
	case r := <-ch:
		return r.data, r.err
	case <-ctx.Done():
		return nil, c.timeoutErr(ctx, t, ctx.Err())
	}
}

// timeoutErr tells a request timeout (the timer canceled ctx) from the
// caller's own ending.
func (c *Client) timeoutErr(ctx context.Context, t clock.Timer, err error) error {
	if ctx.Err() != nil && !t.Stop() {
		return ErrTimeout
	}
	return err
}

// current returns the connection, waiting for one while reconnecting.
func (c *Client) current(ctx context.Context) (Conn, error) {
	for {
		c.mu.Lock()
		conn, up := c.conn, c.up
		c.mu.Unlock()
		if conn != nil {
			return conn, nil
		}
		select {
		case <-up:
		case <-c.done:
			return nil, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) run(conn Conn) {
	defer close(c.done)
	r := backoff.NewRetrier(c.cfg.backoff, c.clock)
	for {
		c.attach(conn)
		_ = c.read(conn)
		c.detach()
		if c.ctx.Err() != nil {
			_ = conn.Close(StatusNormalClosure, "client closed")
			c.err = ErrClientClosed
			return
		}
		_ = conn.Close(StatusNormalClosure, "reconnecting")
		for {
			if err := r.Next(c.ctx); err != nil {
				c.err = ErrClientClosed
				return
			}
			var err error
			if conn, err = c.cfg.dial(c.ctx); err == nil {
				break
			}
			var de *DialError
			if errors.As(err, &de) && de.Status >= 400 && de.Status < 500 &&
				de.Status != http.StatusRequestTimeout && de.Status != http.StatusTooManyRequests {
				c.err = err // refused for good: 401, 403, 404...
				return
			}
			if c.ctx.Err() != nil {
				c.err = ErrClientClosed
				return
			}
		}
		r.Reset()
	}
}

// attach makes conn current and subscribes again after the last cursors.
func (c *Client) attach(conn Conn) {
	c.mu.Lock()
	c.conn = conn
	close(c.up)
	var frame []byte
	for p, after := range c.subs {
		if len(frame) > 0 {
			frame = append(frame, '\n')
		}
		frame = append(frame, encodeRequest(TypeSubscribe, "", p, string(after), nil)...)
	}
	c.mu.Unlock()
	if len(frame) > 0 {
		_ = conn.Write(c.ctx, frame)
	}
}

// detach forgets the connection and fails the requests waiting on it.
func (c *Client) detach() {
	c.mu.Lock()
	c.conn, c.connID, c.up = nil, "", make(chan struct{})
	for id, ch := range c.pending {
		ch <- result{err: ErrDisconnected}
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

func (c *Client) read(conn Conn) error {
	for {
		frame, err := conn.Read(c.ctx)
		if err != nil {
			return err
		}
		if err := decodeFrame(frame, c.handle); err != nil {
			return err
		}
	}
}

func (c *Client) handle(m *wireMsg) error {
	switch m.Type {
	case TypeMessage:
		if m.Sub != "" {
			c.mu.Lock()
			_, ok := c.subs[m.Sub]
			if ok && m.Cursor != "" {
				c.subs[m.Sub] = pubsub.Cursor(m.Cursor)
			}
			c.mu.Unlock()
			if !ok {
				return nil // unsubscribed meanwhile
			}
		}
		return c.deliver(item{m: Message{Sub: m.Sub, Topic: m.Topic, Cursor: pubsub.Cursor(m.Cursor), Data: m.payload()}})
	case TypeGap:
		return c.deliver(item{err: &GapError{Sub: m.Sub, After: pubsub.Cursor(m.After), Reason: m.Reason}})
	case TypeReply, TypeError:
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch != nil {
			r := result{data: m.payload()}
			if m.Type == TypeError {
				r = result{err: &ReplyError{Message: m.Error}}
			}
			ch <- r
		}
	case TypeWelcome:
		c.mu.Lock()
		c.connID = m.Conn
		c.mu.Unlock()
	}
	return nil
}

func (c *Client) deliver(it item) error {
	select {
	case c.in <- it:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

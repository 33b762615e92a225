package push

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults and bounds of the Hub's options.
const (
	DefaultMaxConns         = 100_000
	DefaultMaxConnsPerUser  = 32
	DefaultQueueMessages    = 1024
	DefaultQueueBytes       = 1 << 20
	DefaultWriteTimeout     = 10 * time.Second
	DefaultHeartbeat        = 25 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultReadLimit        = 64 << 10
	DefaultMaxSubscriptions = 100
	DefaultTopicPrefix      = "push"
	DefaultPresenceInterval = 30 * time.Second
	// MaxFrameBytes bounds the frames a writer packs: it starts a new frame
	// rather than grow one past this, unless one message alone is larger.
	MaxFrameBytes = 256 << 10
)

// Errors of the Hub. Test for them with errors.Is.
var (
	// ErrClosed: the hub is shutting down or shut down.
	ErrClosed = errors.New("push: hub closed")
	// ErrTooManyConns: the hub already holds MaxConns connections.
	ErrTooManyConns = errors.New("push: too many connections")
	// ErrUserLimit: the user already holds MaxConnsPerUser connections.
	ErrUserLimit = errors.New("push: too many connections for the user")
	// ErrNoConn: no connection with that id is open on this hub.
	ErrNoConn = errors.New("push: no such connection")
	// ErrSlowConsumer: the connection's send queue overflowed.
	ErrSlowConsumer = errors.New("push: slow consumer")
	// ErrReserved: the topic is reserved for the hub's own use.
	ErrReserved = errors.New("push: reserved topic")
)

// SlowPolicy is what a connection does when its send queue is full.
type SlowPolicy int

const (
	// Disconnect closes the connection with StatusSlowConsumer after the
	// write in progress. The client reconnects and resumes its
	// subscriptions by cursor, so nothing is lost. The default.
	Disconnect SlowPolicy = iota
	// DropNewest discards what does not fit and, once the queue has room,
	// sends a "gap" message with reason "dropped" so the client knows.
	DropNewest
)

// Request is a message a client sent to the server ("send").
type Request struct {
	Conn string // the connection's id
	User string // the connection's user ("" when anonymous)
	ID   string // the client's request id; "" when it wants no reply
	Data []byte // the payload, exactly as the client sent it
}

// MessageHandler handles the messages clients send. For a Request with an
// ID, the returned data is the reply (an error becomes an "error" message
// with the error's text); without an ID both are ignored. It runs on the
// connection's reader, one message at a time per connection: a slow handler
// delays only that connection's requests.
type MessageHandler func(ctx context.Context, r *Request) ([]byte, error)

// PresenceEvent tells that a user came online (their first connection on
// any node) or went offline (their last one ended).
type PresenceEvent struct {
	User   string
	Online bool
}

// Option configures a Hub.
type Option func(*config)

type config struct {
	maxConns, maxConnsPerUser int
	queueMessages, queueBytes int
	slow                      SlowPolicy
	writeTimeout              time.Duration
	heartbeat, pongTimeout    time.Duration
	readLimit                 int
	maxSubs                   int
	prefix                    string
	presenceInterval          time.Duration
	onMessage                 MessageHandler
	onPresence                func(PresenceEvent)
	canSubscribe              func(ctx context.Context, user, pattern string) error
	clock                     clock.Clock
}

func positive[T int | time.Duration](v T, dst *T) {
	if v > 0 {
		*dst = v
	}
}

// MaxConns bounds the hub's connections; one more is closed with
// StatusTryAgainLater. Default DefaultMaxConns.
func MaxConns(n int) Option { return func(c *config) { positive(n, &c.maxConns) } }

// MaxConnsPerUser bounds each user's connections on this hub; one more is
// closed with StatusUserLimit. Anonymous connections are not counted.
// Default DefaultMaxConnsPerUser.
func MaxConnsPerUser(n int) Option { return func(c *config) { positive(n, &c.maxConnsPerUser) } }

// SendQueue bounds each connection's queue of messages waiting to be
// written, in messages and in bytes; past either bound the SlowConsumer
// policy applies. Defaults DefaultQueueMessages and DefaultQueueBytes.
func SendQueue(messages, bytes int) Option {
	return func(c *config) {
		positive(messages, &c.queueMessages)
		positive(bytes, &c.queueBytes)
	}
}

// SlowConsumer sets the policy for a full send queue. Default Disconnect.
func SlowConsumer(p SlowPolicy) Option { return func(c *config) { c.slow = p } }

// WriteTimeout bounds each write to a connection; a peer that does not take
// a frame in time is closed with StatusSlowConsumer. Default
// DefaultWriteTimeout.
func WriteTimeout(d time.Duration) Option { return func(c *config) { positive(d, &c.writeTimeout) } }

// Heartbeat sets how often the hub pings each connection, and how long it
// waits for the pong before it closes the connection with
// StatusPingTimeout. Defaults DefaultHeartbeat and DefaultPongTimeout; an
// interval of zero or less turns pings off.
func Heartbeat(interval, pongTimeout time.Duration) Option {
	return func(c *config) {
		c.heartbeat = interval
		positive(pongTimeout, &c.pongTimeout)
	}
}

// ReadLimit bounds each message a client sends; a larger one closes the
// connection with StatusMessageTooBig. Default DefaultReadLimit (64 KiB).
func ReadLimit(n int) Option { return func(c *config) { positive(n, &c.readLimit) } }

// MaxSubscriptions bounds the subscriptions of one connection; one more is
// refused with an "error" reply. Default DefaultMaxSubscriptions.
func MaxSubscriptions(n int) Option { return func(c *config) { positive(n, &c.maxSubs) } }

// TopicPrefix names the first token of the topics the hub uses itself:
// "<prefix>.user.<hex of user id>" for each user, "<prefix>.all" for
// broadcasts and "<prefix>.presence". Clients may not subscribe to them
// (nor to patterns starting with a wildcard). Hubs that share a broker must
// share the prefix. Default DefaultTopicPrefix ("push").
func TopicPrefix(p string) Option {
	return func(c *config) {
		if p != "" {
			c.prefix = p
		}
	}
}

// OnMessage sets the handler of the messages clients send. Default: none;
// requests with an id get an "error" reply.
func OnMessage(f MessageHandler) Option { return func(c *config) { c.onMessage = f } }

// OnPresence sets a callback told when a user comes online or goes offline
// on any node of the broker. Calls are serialized; keep them short. Default:
// none.
func OnPresence(f func(PresenceEvent)) Option { return func(c *config) { c.onPresence = f } }

// PresenceInterval sets how often the hub tells the other nodes who is
// connected to it; a node not heard from for three intervals is forgotten
// (it crashed). Default DefaultPresenceInterval.
func PresenceInterval(d time.Duration) Option {
	return func(c *config) { positive(d, &c.presenceInterval) }
}

// CanSubscribe is the authorization hook for subscriptions: a non-nil
// error refuses the subscription with an "error" reply carrying its text.
// Default: every pattern outside the reserved prefix is allowed.
func CanSubscribe(f func(ctx context.Context, user, pattern string) error) Option {
	return func(c *config) { c.canSubscribe = f }
}

// WithClock sets the clock behind heartbeats, write timeouts and presence.
// Default: the real clock.
func WithClock(c clock.Clock) Option { return func(cfg *config) { cfg.clock = c } }

// Hub owns connections and delivers to them: to one connection, to every
// connection of a user, to the subscribers of a topic, to everyone. It
// subscribes to the broker once per topic pattern (and once per connected
// user, once for broadcasts) and fans each message out to its local
// connections, encoded once.
//
// All methods are safe for concurrent use.
type Hub struct {
	b     pubsub.Backend
	cfg   config
	clock clock.Clock
	node  string
	pres  *presence

	ctx    context.Context // canceled when Shutdown is done with the connections
	cancel context.CancelFunc
	wg     sync.WaitGroup // fan-outs and the presence reader
	conns  sync.WaitGroup // Serve calls

	mu      sync.Mutex
	closing bool                             // guarded by mu
	byID    map[string]*session              // guarded by mu
	users   map[string]map[*session]struct{} // guarded by mu
	fans    map[string]*fanout               // by pattern; guarded by mu
}

// NewHub returns a running Hub on broker b. It subscribes to the presence
// topic at once, hence the error. Shut it down with Shutdown.
func NewHub(b pubsub.Backend, opts ...Option) (*Hub, error) {
	cfg := config{
		maxConns: DefaultMaxConns, maxConnsPerUser: DefaultMaxConnsPerUser,
		queueMessages: DefaultQueueMessages, queueBytes: DefaultQueueBytes,
		writeTimeout: DefaultWriteTimeout, heartbeat: DefaultHeartbeat,
		pongTimeout: DefaultPongTimeout, readLimit: DefaultReadLimit,
		maxSubs: DefaultMaxSubscriptions, prefix: DefaultTopicPrefix,
		presenceInterval: DefaultPresenceInterval,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := pubsub.ValidateTopic(cfg.prefix); err != nil || strings.Contains(cfg.prefix, ".") {
		return nil, fmt.Errorf("push: topic prefix %q must be one subject token", cfg.prefix)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		b: b, cfg: cfg, clock: clock.Or(cfg.clock), node: ids.New(),
		ctx: ctx, cancel: cancel,
		byID:  make(map[string]*session),
		users: make(map[string]map[*session]struct{}),
		fans:  make(map[string]*fanout),
	}
	pres, err := startPresence(h)
	if err != nil {
		cancel()
		return nil, err
	}
	h.pres = pres
	return h, nil
}

func (h *Hub) userTopic(user string) string {
	return h.cfg.prefix + ".user." + hex.EncodeToString([]byte(user))
}

func (h *Hub) allTopic() string      { return h.cfg.prefix + ".all" }
func (h *Hub) presenceTopic() string { return h.cfg.prefix + ".presence" }

// reserved reports whether a client may not subscribe to pattern: it could
// match the hub's own topics.
func (h *Hub) reserved(pattern string) bool {
	first, _, _ := strings.Cut(pattern, ".")
	return first == "*" || first == ">" || first == h.cfg.prefix
}

// Publish sends data to the subscribers of topic on every hub of the
// broker, and to its retained history. It returns the message's cursor.
func (h *Hub) Publish(ctx context.Context, topic string, data []byte) (pubsub.Cursor, error) {
	if h.reserved(topic) {
		return "", fmt.Errorf("%w: %q", ErrReserved, topic)
	}
	return h.b.Publish(ctx, pubsub.Message{Topic: topic, Data: data})
}

// SendUser sends data to every connection of user, on every hub of the
// broker. It does not tell whether the user is connected anywhere (see
// Presence).
func (h *Hub) SendUser(ctx context.Context, user string, data []byte) error {
	_, err := h.b.Publish(ctx, pubsub.Message{Topic: h.userTopic(user), Data: data})
	return err
}

// Broadcast sends data to every connection of every hub of the broker.
func (h *Hub) Broadcast(ctx context.Context, data []byte) error {
	_, err := h.b.Publish(ctx, pubsub.Message{Topic: h.allTopic(), Data: data})
	return err
}

// Send queues data for the connection with id conn on this hub. It fails
// with ErrNoConn when there is none, ErrSlowConsumer when the connection's
// queue is full.
func (h *Hub) Send(conn string, data []byte) error {
	h.mu.Lock()
	s := h.byID[conn]
	h.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: %q", ErrNoConn, conn)
	}
	m := pubsub.Message{Data: data}
	if !s.push(encodeMessage("", &m)) {
		return ErrSlowConsumer
	}
	return nil
}

// Conns reports how many connections are open on this hub.
func (h *Hub) Conns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID)
}

// LocalPresence returns the users connected to this hub and how many
// connections each holds.
func (h *Hub) LocalPresence() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.users))
	for u, ss := range h.users {
		out[u] = len(ss)
	}
	return out
}

// Presence returns the users connected to any hub of the broker and their
// connection counts, as far as this hub has heard (other nodes' changes
// arrive through the broker).
func (h *Hub) Presence() map[string]int { return h.pres.totals() }

// Shutdown closes every connection with StatusGoingAway, refuses new ones,
// and waits until every Serve call and every goroutine of the hub has
// returned. If ctx ends first, it cuts the remaining connections without a
// close handshake, waits for them, and returns ctx.Err(). Clients reconnect
// (to another node) and resume by cursor.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	already := h.closing
	h.closing = true
	sessions := make([]*session, 0, len(h.byID))
	for _, s := range h.byID {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	if !already {
		h.pres.bye()
	}
	for _, s := range sessions {
		s.closeWith(StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.conns.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, s := range sessions {
			s.cancel()
		}
		<-done
	}
	h.cancel()
	h.wg.Wait()
	return err
}

// Serve runs connection c of user ("" for anonymous) until it ends: the
// peer closes it or stops answering pings, it falls too far behind, ctx
// ends, or the hub shuts down. The transports call it (NewHandler does);
// call it yourself for a transport of your own. It closes c before it
// returns. It fails at once, after closing c with the matching code, with
// ErrClosed, ErrTooManyConns or ErrUserLimit.
func (h *Hub) Serve(ctx context.Context, c Conn, user string) error {
	s, err := h.register(ctx, c, user)
	if err != nil {
		return err
	}
	defer h.conns.Done()
	// The heartbeat is armed before anything is written, so a peer that
	// has read its welcome knows it is.
	var beat clock.Timer
	if h.cfg.heartbeat > 0 {
		beat = h.clock.NewTimer(h.cfg.heartbeat)
	}
	s.wg.Add(1)
	go s.writeLoop(beat)
	s.push(encodeWelcome(s.id, user))
	s.readLoop()
	s.cancel()
	s.wg.Wait()
	h.unregister(s)
	return nil
}

func (h *Hub) register(ctx context.Context, c Conn, user string) (*session, error) {
	h.mu.Lock()
	var code StatusCode
	var err error
	switch {
	case h.closing:
		code, err = StatusGoingAway, ErrClosed
	case len(h.byID) >= h.cfg.maxConns:
		code, err = StatusTryAgainLater, ErrTooManyConns
	case user != "" && len(h.users[user]) >= h.cfg.maxConnsPerUser:
		code, err = StatusUserLimit, ErrUserLimit
	}
	if err != nil {
		h.mu.Unlock()
		_ = c.Close(code, strings.TrimPrefix(err.Error(), "push: "))
		return nil, err
	}
	s := newSession(h, ctx, c, user)
	direct := []string{h.allTopic()}
	if user != "" {
		direct = append(direct, h.userTopic(user))
	}
	for _, p := range direct {
		f, ferr := h.fanoutFor(p, false)
		if ferr != nil {
			for _, j := range s.direct {
				j.remove(s)
			}
			h.mu.Unlock()
			s.cancel()
			_ = c.Close(StatusTryAgainLater, "broker unavailable")
			return nil, ferr
		}
		f.add(s)
		s.direct = append(s.direct, f)
	}
	h.byID[s.id] = s
	count := 0
	if user != "" {
		set := h.users[user]
		if set == nil {
			set = make(map[*session]struct{})
			h.users[user] = set
		}
		set[s] = struct{}{}
		count = len(set)
	}
	h.conns.Add(1)
	h.mu.Unlock()
	if user != "" {
		h.pres.local(user, count)
	}
	return s, nil
}

func (h *Hub) unregister(s *session) {
	h.mu.Lock()
	delete(h.byID, s.id)
	for _, f := range s.direct {
		f.remove(s)
	}
	for _, f := range s.topicFanouts() {
		f.remove(s)
	}
	count := -1
	if s.user != "" {
		set := h.users[s.user]
		delete(set, s)
		count = len(set)
		if count == 0 {
			delete(h.users, s.user)
		}
	}
	h.mu.Unlock()
	if count >= 0 {
		h.pres.local(s.user, count)
	}
}

// Pipe connects a new in-memory connection of user to the hub and returns
// the client's end, for tests and for in-process clients (Connect with
// WithDialer). The hub serves the other end until it ends; Shutdown waits
// for it. After Shutdown the returned Conn is already closed.
func (h *Hub) Pipe(user string) Conn {
	client, server := Pipe()
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		_ = server.Close(StatusGoingAway, "hub closed")
		return client
	}
	h.conns.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.conns.Done()
		_ = h.Serve(context.Background(), server, user)
	}()
	return client
}

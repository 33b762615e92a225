package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Message is one published message.
//
// Data and Header are shared, not copied: Publish keeps them, and every
// subscriber receives the same backing arrays. Neither the publisher (after
// Publish returns) nor a subscriber may modify them.
type Message struct {
	// Topic is the subject the message was published to ("orders.eu.42").
	Topic string
	// Data is the payload.
	Data []byte
	// Header carries optional metadata. May be nil.
	Header map[string]string
	// ID identifies the message. A publisher may set it; when empty the broker
	// assigns a unique, time-sortable one.
	ID string
	// Time is when the broker accepted the message. Set by the broker.
	Time time.Time
	// Cursor is the message's position in the broker's history. Set by the
	// broker. Subscribing After(m.Cursor) continues right after m.
	Cursor Cursor

	memo *memo // shared per published message; nil for messages built by hand
}

// Encoded returns enc(m), computing it at most once per published message
// however many subscribers ask, per key. Adapters use it to encode a message
// once for thousands of connections (an SSE event, a WebSocket frame). The
// key identifies the encoding; use a value of an unexported type, as with
// context keys. For a Message that did not come from a broker, it calls enc.
// The returned slice is shared: do not modify it.
func (m *Message) Encoded(key any, enc func(*Message) []byte) []byte {
	if m.memo == nil {
		return enc(m)
	}
	return m.memo.get(key, func() []byte { return enc(m) })
}

// memo holds a message's encodings: a short lock-free list, because a message
// rarely has more than one or two.
type memo struct{ head atomic.Pointer[memoNode] }

type memoNode struct {
	key  any
	val  []byte
	next *memoNode
}

func (mm *memo) get(key any, enc func() []byte) []byte {
	for {
		head := mm.head.Load()
		for n := head; n != nil; n = n.next {
			if n.key == key {
				return n.val
			}
		}
		n := &memoNode{key: key, val: enc(), next: head}
		if mm.head.CompareAndSwap(head, n) {
			return n.val
		}
		// Lost a race with another encoder; look again (it may have added
		// this very key) and retry.
	}
}

// Publisher publishes messages.
type Publisher interface {
	// Publish sends m to every subscription whose pattern matches m.Topic and
	// appends it to the topic's retained history. It returns m's cursor.
	// m.Topic must be a valid subject without wildcards. Publish does not
	// wait for subscribers, except those that chose the Block policy.
	Publish(ctx context.Context, m Message) (Cursor, error)
}

// Subscriber opens subscriptions.
type Subscriber interface {
	// Subscribe delivers, in order per topic, every message published after
	// the call to a topic matching pattern (NATS rules: "*" one token, ">"
	// the rest). With After(c) it first replays what history retains after
	// c, then continues live with no gap and no duplicate. The subscription
	// ends when it is closed, when ctx ends, or when the broker closes.
	Subscribe(ctx context.Context, pattern string, opts ...SubscribeOption) (Subscription, error)
}

// Subscription is a stream of messages. Its methods are safe for concurrent
// use, though one reader at a time is the normal case.
type Subscription interface {
	// Next blocks until a message is available and returns it. It returns
	// an error testable with errors.Is against:
	//   - ErrGap: history no longer reaches the cursor the subscription
	//     started after (a *GapError says more). This is a signal, not the
	//     end: the next call continues as the OnGap option chose.
	//   - ErrSlowConsumer: the subscriber fell further behind than its
	//     buffer under the Disconnect or Block policy; the subscription is
	//     over. Resubscribe After the last cursor received to resume.
	//   - ErrClosed: the subscription or the broker was closed.
	//   - ctx.Err() of either the call's or the subscription's context.
	Next(ctx context.Context) (Message, error)
	// NextBatch is Next for writers that coalesce: it blocks until at least
	// one message is available, then appends to buf every message already
	// waiting, up to cap(buf) in total (at least one), and returns the
	// extended slice. Errors are those of Next, returned with buf unchanged.
	// With a ctx that has already ended it never waits: it returns what is
	// waiting, or ctx.Err() when nothing is (how a writer drains its
	// backlog without blocking).
	NextBatch(ctx context.Context, buf []Message) ([]Message, error)
	// Close ends the subscription and releases what it holds. Blocked and
	// later calls to Next return ErrClosed. Close is idempotent.
	Close() error
}

// Drain takes what sub has waiting, up to cap(buf) messages in total,
// without waiting: NextBatch with a context that has already ended. It
// returns buf unchanged and context.Canceled when nothing is waiting, and
// the subscription's own errors (ErrGap, ErrSlowConsumer, ErrClosed) as
// NextBatch does. A writer that coalesces blocks on Next for one message,
// then drains the rest in one call.
func Drain(sub Subscription, buf []Message) ([]Message, error) {
	return sub.NextBatch(ended, buf)
}

// ended is a context that has already ended, for Drain.
var ended = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// Backend is what the patterns built on pubsub (SSE, push, long polling)
// take: a broker that publishes, subscribes and closes. The memory Broker
// implements it; so do the engine-backed brokers.
type Backend interface {
	Publisher
	Subscriber
	// Close ends every subscription (readers get ErrClosed) and releases
	// the broker's resources.
	Close() error
}

// HeadReader is implemented by brokers that can tell where "now" is: the
// cursor of the newest message (the cursor of an empty history when there
// is none). Subscribing After it delivers exactly what is published from
// then on; a long-polling client with no cursor yet starts from it, so no
// message falls between two of its polls. Every broker in this module
// implements it.
type HeadReader interface {
	Head(ctx context.Context) (Cursor, error)
}

// Errors returned by brokers and subscriptions. Test for them with errors.Is.
var (
	// ErrClosed: the broker or the subscription was closed.
	ErrClosed = errors.New("pubsub: closed")
	// ErrSlowConsumer: the subscription fell too far behind and was ended.
	ErrSlowConsumer = errors.New("pubsub: slow consumer disconnected")
	// ErrGap: retained history does not reach back to the requested cursor.
	ErrGap = errors.New("pubsub: history gap")
	// ErrInvalidSubject: a topic or pattern is not a valid subject. The
	// error is a *SubjectError.
	ErrInvalidSubject = errors.New("pubsub: invalid subject")
	// ErrInvalidCursor: a cursor could not be parsed.
	ErrInvalidCursor = errors.New("pubsub: invalid cursor")
	// ErrTooLarge: a message exceeds the broker's size limit.
	ErrTooLarge = errors.New("pubsub: message too large")
)

// GapError tells a subscriber that messages after its cursor are gone.
// errors.Is(err, ErrGap) reports true for it.
type GapError struct {
	// After is the cursor the subscriber asked to continue after.
	After Cursor
	// Reason says why: "epoch" (the cursor is from another broker or an
	// earlier life of this one), "trimmed" (history was trimmed past it by
	// count or age) or "not retained" (the broker keeps no history for the
	// topic). Engine-backed brokers may give their own reason for a gap in
	// a live stream (their engine lost history); After is then empty.
	Reason string

	through Position // a Relay reset: messages up to here may be lost
}

func (e *GapError) Error() string {
	return fmt.Sprintf("pubsub: history gap after cursor %q (%s)", e.After, e.Reason)
}

// Is makes errors.Is(err, ErrGap) true.
func (e *GapError) Is(target error) bool { return target == ErrGap }

// Cursor is an opaque position in a broker's history: the broker's epoch and
// a broker-wide sequence. The zero value means "no position". Cursors are
// safe to hand to clients (as an SSE event id, a long-poll parameter) and to
// compare for equality; order them only through the broker.
type Cursor string

// Position is a point in a broker-wide order, compared with Less. Engines with
// one counter (the memory broker, a JetStream stream sequence, a PostgreSQL
// bigserial) use Lo alone; a Redis stream id "ms-seq" is Hi=ms, Lo=seq.
type Position struct{ Hi, Lo uint64 }

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.Hi < q.Hi || (p.Hi == q.Hi && p.Lo < q.Lo)
}

// MakeCursor builds the cursor for position p in a broker whose epoch is
// epoch. Epochs are short strings without '.'; backends use it to mint the
// cursors of their messages.
func MakeCursor(epoch string, p Position) Cursor {
	return Cursor(appendCursor(nil, epoch, p))
}

func appendCursor(b []byte, epoch string, p Position) []byte {
	b = append(b, epoch...)
	b = append(b, '.')
	if p.Hi != 0 {
		b = strconv.AppendUint(b, p.Hi, 10)
		b = append(b, '-')
	}
	return strconv.AppendUint(b, p.Lo, 10)
}

// Parse splits a cursor into its epoch and position. It fails with
// ErrInvalidCursor for the empty cursor and for text no broker produced.
func (c Cursor) Parse() (epoch string, p Position, err error) {
	s := string(c)
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return "", Position{}, fmt.Errorf("%w: %q", ErrInvalidCursor, s)
	}
	epoch, num := s[:dot], s[dot+1:]
	hi, lo := "", num
	if dash := strings.IndexByte(num, '-'); dash >= 0 {
		hi, lo = num[:dash], num[dash+1:]
		if hi == "" {
			return "", Position{}, fmt.Errorf("%w: %q", ErrInvalidCursor, s)
		}
	}
	if hi != "" {
		if p.Hi, err = parseDigits(hi); err != nil {
			return "", Position{}, fmt.Errorf("%w: %q", ErrInvalidCursor, s)
		}
	}
	if p.Lo, err = parseDigits(lo); err != nil {
		return "", Position{}, fmt.Errorf("%w: %q", ErrInvalidCursor, s)
	}
	return epoch, p, nil
}

// parseDigits accepts only ASCII digits (no sign, no spaces), so that every
// cursor has one spelling.
func parseDigits(s string) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, ErrInvalidCursor
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrInvalidCursor
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// Policy is what a subscription does when it falls further behind than its
// buffer allows.
type Policy int

const (
	// Disconnect ends the subscription with ErrSlowConsumer. With a cursor
	// and retained history the subscriber resumes losslessly by subscribing
	// After its last cursor. The default: never a silent hole.
	Disconnect Policy = iota
	// DropOldest discards the oldest buffered messages to make room; the
	// subscriber skips ahead and Dropped counts what it missed.
	DropOldest
	// DropNewest discards new messages while the buffer is full; the
	// subscriber receives the buffered ones, then what arrives once it has
	// room again.
	DropNewest
	// Block makes Publish wait for room, up to the BlockTimeout (default 1s);
	// past it the subscription ends with ErrSlowConsumer and Publish goes on.
	// Only this policy ever slows a publisher.
	Block
)

func (p Policy) String() string {
	switch p {
	case Disconnect:
		return "disconnect"
	case DropOldest:
		return "drop-oldest"
	case DropNewest:
		return "drop-newest"
	case Block:
		return "block"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// GapPolicy is where a subscription continues after reporting ErrGap.
type GapPolicy int

const (
	// ResumeFromOldest continues with the oldest message history still
	// retains (losing only what is really gone). The default.
	ResumeFromOldest GapPolicy = iota
	// ResumeFromNow skips history and continues with live messages.
	ResumeFromNow
)

// Defaults and bounds of subscription options.
const (
	DefaultBuffer       = 1024
	MaxBuffer           = 1 << 20
	DefaultBlockTimeout = time.Second
)

// SubscribeOption configures a subscription.
type SubscribeOption func(*SubscribeConfig)

// SubscribeConfig is the result of applying SubscribeOptions. Backends read
// it through NewSubscribeConfig; applications use the options.
type SubscribeConfig struct {
	After        Cursor        // replay after this cursor; "" = live only
	FromOldest   bool          // replay all retained history first
	Buffer       int           // bound on unread live messages
	Overflow     Policy        // what happens past Buffer
	BlockTimeout time.Duration // for Overflow == Block
	OnGap        GapPolicy     // where to continue after ErrGap
}

// NewSubscribeConfig applies opts over the defaults and clamps the bounds.
func NewSubscribeConfig(opts ...SubscribeOption) SubscribeConfig {
	c := SubscribeConfig{Buffer: DefaultBuffer, BlockTimeout: DefaultBlockTimeout}
	for _, o := range opts {
		o(&c)
	}
	if c.Buffer <= 0 {
		c.Buffer = DefaultBuffer
	}
	if c.Buffer > MaxBuffer {
		c.Buffer = MaxBuffer
	}
	if c.BlockTimeout <= 0 {
		c.BlockTimeout = DefaultBlockTimeout
	}
	return c
}

// After replays retained messages published after c, then continues live.
// An empty c means live only.
func After(c Cursor) SubscribeOption { return func(s *SubscribeConfig) { s.After = c } }

// FromOldest replays every retained message of the matching topics, then
// continues live.
func FromOldest() SubscribeOption { return func(s *SubscribeConfig) { s.FromOldest = true } }

// Buffer bounds how many live messages the subscription may leave unread
// before its overflow policy applies. Default DefaultBuffer, at most
// MaxBuffer. Replayed history does not count against it.
func Buffer(n int) SubscribeOption { return func(s *SubscribeConfig) { s.Buffer = n } }

// Overflow sets the policy applied past the buffer. Default Disconnect.
func Overflow(p Policy) SubscribeOption { return func(s *SubscribeConfig) { s.Overflow = p } }

// BlockTimeout bounds how long Publish waits for this subscription under the
// Block policy. Default DefaultBlockTimeout.
func BlockTimeout(d time.Duration) SubscribeOption {
	return func(s *SubscribeConfig) { s.BlockTimeout = d }
}

// OnGap chooses where the subscription continues after it reports ErrGap.
// Default ResumeFromOldest.
func OnGap(p GapPolicy) SubscribeOption { return func(s *SubscribeConfig) { s.OnGap = p } }

package redispubsub

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/internal/wire"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults and bounds of the options.
const (
	// DefaultNamespace prefixes the keys of a broker without a Namespace.
	DefaultNamespace = "switchboard"
	// DefaultRetentionCount is how many messages the stream keeps (in all
	// topics together) when Retention does not say.
	DefaultRetentionCount = 100_000
	// DefaultRetentionAge is how old a retained message may grow when
	// Retention does not say.
	DefaultRetentionAge = 24 * time.Hour
	// DefaultReconnectBase and DefaultReconnectMax bound the feed's waits
	// between reconnection attempts (full jitter).
	DefaultReconnectBase = 100 * time.Millisecond
	DefaultReconnectMax  = 5 * time.Second
)

// The feed's bounds: how many entries one XREAD takes, and how long it
// blocks before asking again (what bounds the detection of a silently dead
// connection, with the client's read timeout).
const (
	feedBatch = 1000
	feedBlock = 5 * time.Second
)

// Option configures a Broker.
type Option func(*config)

type config struct {
	namespace      string
	count          int
	maxAge         time.Duration
	exact          bool
	maxMessageSize int
	reconnect      backoff.Policy
	local          []pubsub.Option
}

// Namespace sets the prefix of the broker's Redis keys: the stream
// "{ns}:stream" and the hash "{ns}:meta" that holds its epoch (the braces
// keep both in one hash slot). Brokers of one application on every node share a namespace; brokers
// in different namespaces share nothing. Default DefaultNamespace. It may not
// be empty or contain '{' or '}'.
func Namespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// Retention bounds the history, which is one stream for every topic of the
// namespace: the newest count messages (count <= 0 means
// DefaultRetentionCount), and, when maxAge > 0, only those younger than
// maxAge (maxAge <= 0: no age bound). Publish trims: Redis has no expiry of
// stream entries, so in a namespace where nobody publishes, old messages
// stay until the next Publish. Trimming is approximate (Redis removes whole
// stream nodes, so it keeps up to about 100 messages more) unless
// ExactRetention is set. Default: DefaultRetentionCount and
// DefaultRetentionAge.
func Retention(count int, maxAge time.Duration) Option {
	return func(c *config) {
		if count <= 0 {
			count = DefaultRetentionCount
		}
		c.count, c.maxAge = count, max(maxAge, 0)
	}
}

// ExactRetention makes Retention exact: the stream holds exactly the newest
// count messages (and none older than maxAge). It costs Redis more work per
// Publish than the default, approximate, trimming.
func ExactRetention() Option { return func(c *config) { c.exact = true } }

// MaxMessageSize bounds len(Data) plus the bytes of the header's keys and
// values; Publish of a larger message fails with pubsub.ErrTooLarge. Every
// node of a namespace should use the same bound: a node receiving a larger
// message from another reports a gap to its subscribers instead. Default
// pubsub.DefaultMaxMessageSize (1 MiB).
func MaxMessageSize(n int) Option { return func(c *config) { c.maxMessageSize = n } }

// ReconnectBackoff sets the waits between the feed's attempts to reconnect
// after losing its connection: a random duration in [0, min(max,
// base*2^attempt)]. Default DefaultReconnectBase and DefaultReconnectMax.
func ReconnectBackoff(base, max time.Duration) Option {
	return func(c *config) { c.reconnect = backoff.Policy{Base: base, Max: max} }
}

// Local passes options to the node's local fan-out (a pubsub.Relay over a
// memory broker): pubsub.MaxTopics and pubsub.WithClock apply; History is
// ignored, since Redis keeps the history.
func Local(opts ...pubsub.Option) Option {
	return func(c *config) { c.local = append(c.local, opts...) }
}

// Broker is a pubsub.Backend on Redis. All methods are safe for concurrent
// use.
type Broker struct {
	client *redis.Client // the caller's: Publish, history, head
	feed   *redis.Client // ours: the one connection of the feed's XREAD
	stream string        // the stream key
	meta   string        // the meta hash: epoch and newest id
	cfg    config
	relay  *pubsub.Relay
	ids    ids.Generator

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc // ends the feed
	done      chan struct{}      // closed when the feed has returned
}

var _ pubsub.Backend = (*Broker)(nil)

// New returns a broker on the Redis that client talks to, and starts its
// feed. It makes sure the namespace's stream and epoch exist, so it needs
// Redis to be reachable. The broker uses client for Publish and replay, and
// opens one more connection with client's options for its feed; Close
// closes that one and leaves client open.
//
// Redis 6.2 or later is required (XADD with MINID, XRANGE with exclusive
// ranges). client may not be a cluster client: one namespace is one stream,
// on one node.
func New(ctx context.Context, client *redis.Client, opts ...Option) (*Broker, error) {
	cfg := config{namespace: DefaultNamespace, count: DefaultRetentionCount, maxAge: DefaultRetentionAge,
		maxMessageSize: pubsub.DefaultMaxMessageSize,
		reconnect:      backoff.Policy{Base: DefaultReconnectBase, Max: DefaultReconnectMax}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.namespace == "" || strings.ContainsAny(cfg.namespace, "{}") {
		return nil, fmt.Errorf("redispubsub: invalid namespace %q", cfg.namespace)
	}
	if cfg.maxMessageSize <= 0 {
		cfg.maxMessageSize = pubsub.DefaultMaxMessageSize
	}
	b := &Broker{
		client: client,
		stream: "{" + cfg.namespace + "}:stream",
		meta:   "{" + cfg.namespace + "}:meta",
		cfg:    cfg,
		done:   make(chan struct{}),
	}
	epoch, err := b.ensure(ctx, client)
	if err != nil {
		return nil, err
	}
	start, err := b.head(ctx)
	if err != nil {
		return nil, fmt.Errorf("redispubsub: %w", err)
	}

	fo := *client.Options()
	fo.PoolSize, fo.MinIdleConns, fo.MaxIdleConns, fo.MaxActiveConns = 1, 0, 1, 1
	fo.MaxRetries = -1 // the feed retries with its own backoff
	b.feed = redis.NewClient(&fo)

	b.relay = pubsub.NewRelay(pubsub.RelayConfig{
		Epoch:   epoch,
		Start:   start,
		History: b.history,
		Head:    b.head,
		Options: append([]pubsub.Option{pubsub.MaxMessageSize(cfg.maxMessageSize)}, cfg.local...),
	})
	feedCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	go b.run(feedCtx)
	return b, nil
}

// Stats returns the counters of the node's local fan-out.
// Head returns the cursor of the engine's newest message (pubsub.HeadReader).
func (b *Broker) Head(ctx context.Context) (pubsub.Cursor, error) { return b.relay.Head(ctx) }

func (b *Broker) Stats() pubsub.Stats { return b.relay.Stats() }

// Close stops the feed, waiting for it, and ends every local subscription
// (readers get pubsub.ErrClosed). It closes the feed's connection, not the
// client given to New. Later Publish and Subscribe calls fail with
// pubsub.ErrClosed. Close is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.cancel()
		_ = b.feed.Close() // unblocks an XREAD in progress
		<-b.done
		_ = b.relay.Close()
	})
	return nil
}

// Subscribe opens a local subscription, as pubsub.Subscriber. Live messages
// come from the node's one feed; a subscription After a cursor or
// FromOldest first replays the stream.
func (b *Broker) Subscribe(ctx context.Context, pattern string, opts ...pubsub.SubscribeOption) (pubsub.Subscription, error) {
	if b.closed.Load() {
		return nil, pubsub.ErrClosed
	}
	return b.relay.Subscribe(ctx, pattern, opts...)
}

// Publish appends m to the namespace's stream (trimming it to the
// retention) and returns its cursor. It returns an error, never a cursor,
// when Redis did not accept the message: a message is published exactly
// when Publish succeeds, except that the client's retries (go-redis's
// MaxRetries) may append it twice when a reply is lost.
func (b *Broker) Publish(ctx context.Context, m pubsub.Message) (pubsub.Cursor, error) {
	if err := pubsub.ValidateTopic(m.Topic); err != nil {
		return "", err
	}
	size := len(m.Data)
	for k, v := range m.Header {
		size += len(k) + len(v)
	}
	if size > b.cfg.maxMessageSize {
		return "", fmt.Errorf("%w: %d bytes, limit %d", pubsub.ErrTooLarge, size, b.cfg.maxMessageSize)
	}
	if b.closed.Load() {
		return "", pubsub.ErrClosed
	}
	if m.ID == "" {
		m.ID = b.ids.ID(time.Now())
	}
	var argv [argFields + 1]any
	args := append(b.scriptArgs(argv[:0]), encode(&m))
	res, err := ensureScript.Run(ctx, b.client, []string{b.stream, b.meta}, args...).StringSlice()
	if err != nil {
		return "", fmt.Errorf("redispubsub: publish: %w", err)
	}
	if len(res) != 2 {
		return "", fmt.Errorf("redispubsub: publish: unexpected reply %q", res)
	}
	pos, err := parseID(res[1])
	if err != nil {
		return "", err
	}
	return pubsub.MakeCursor(res[0], pos), nil
}

// The fields of a stream entry. The entry's stream id is the message's
// position, and its milliseconds the message's Time.
const (
	fieldEpoch   = "e" // the epoch the entry was added in
	fieldPrev    = "p" // the id of the entry added before it ("0-0": none)
	fieldMessage = "m" // the message: see encode
)

// encode packs a message's topic, ID, header and data into one field
// value: three fields per entry instead of one per header key cost Redis,
// the script and the readers less. The layout: uvarint-prefixed topic and
// ID, a uvarint count of header pairs, each key and value uvarint-prefixed,
// then the data to the end.
func encode(m *pubsub.Message) []byte {
	buf := make([]byte, 0, len(m.Topic)+len(m.ID)+len(m.Data)+2*binary.MaxVarintLen32+wire.HeaderSize(m.Header))
	buf = wire.AppendString(buf, m.Topic)
	buf = wire.AppendString(buf, m.ID)
	buf = wire.AppendHeader(buf, m.Header)
	return append(buf, m.Data...)
}

// decodeMessage unpacks what encode packed.
func decodeMessage(s string, m *pubsub.Message) bool {
	var ok bool
	if m.Topic, s, ok = wire.CutString(s); !ok {
		return false
	}
	if m.ID, s, ok = wire.CutString(s); !ok {
		return false
	}
	if m.Header, s, ok = wire.CutHeader(s); !ok {
		return false
	}
	m.Data = []byte(s)
	return true
}

// ensureScript makes sure the stream and its epoch exist, atomically: a
// missing stream means its history was lost (or never was), so it gets a
// new epoch. With fields, it then appends them as an entry, with the epoch
// and the id of the entry added before it, and trims the stream. It returns
// {epoch} or {epoch, id}.
//
// The meta hash holds the epoch and the id of the newest entry ever added
// ("last"), which the next entry records: a reader that finds an entry
// whose predecessor is not the entry it read last knows that what came
// between was trimmed, without asking Redis anything else.
//
// KEYS: stream, meta. ARGV: a new epoch to use if needed, the count bound,
// the trim mode ("~" or "="), the age bound in ms (0: none), then the
// encoded message, if any.
var ensureScript = redis.NewScript(`
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'last')
local epoch, last = meta[1], meta[2]
if redis.call('EXISTS', KEYS[1]) == 0 then
  epoch = false
  if #ARGV == 4 then
    redis.call('XGROUP', 'CREATE', KEYS[1], 'switchboard-init', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', KEYS[1], 'switchboard-init')
  end
end
if not epoch or not last then
  epoch, last = ARGV[1], '0-0'
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'last', last)
end
if #ARGV == 4 then
  return {epoch}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], ARGV[2], '*', 'e', epoch, 'p', last, 'm', ARGV[5])
redis.call('HSET', KEYS[2], 'last', id)
local age = tonumber(ARGV[4])
if age > 0 then
  -- The new id's milliseconds are Redis's clock. Trim by age once per
  -- millisecond (at the first entry of each), not on every entry.
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq == '0' then
    redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3], string.format('%d', tonumber(ms) - age))
  end
end
return {epoch, id}
`)

const argFields = 4

// scriptArgs appends the script's first arguments.
func (b *Broker) scriptArgs(args []any) []any {
	mode := "~"
	if b.cfg.exact {
		mode = "="
	}
	return append(args, newEpoch(), b.cfg.count, mode, b.cfg.maxAge.Milliseconds())
}

// ensure returns the namespace's epoch, creating the stream and the epoch
// if they are missing.
func (b *Broker) ensure(ctx context.Context, c *redis.Client) (string, error) {
	res, err := ensureScript.Run(ctx, c, []string{b.stream, b.meta}, b.scriptArgs(nil)...).StringSlice()
	if err != nil {
		return "", fmt.Errorf("redispubsub: %w", err)
	}
	if len(res) != 1 {
		return "", fmt.Errorf("redispubsub: unexpected reply %q", res)
	}
	return res[0], nil
}

// newEpoch returns 12 random base32 characters (60 bits): enough that a
// namespace never meets an epoch twice. Every Publish proposes one, in case
// the stream is gone, so it comes from math/rand/v2's generator (ChaCha8,
// seeded from the operating system), which costs no system call.
func newEpoch() string {
	const alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
	var b [12]byte
	r := rand.Uint64()
	for i := range b {
		b[i] = alphabet[r&31]
		r >>= 5
	}
	return string(b[:])
}

// head returns the position of the newest entry, for the relay.
func (b *Broker) head(ctx context.Context) (pubsub.Position, error) {
	xs, err := b.client.XRevRangeN(ctx, b.stream, "+", "-", 1).Result()
	if err != nil || len(xs) == 0 {
		return pubsub.Position{}, err
	}
	return parseID(xs[0].ID)
}

// history reads the stream for the relay: entries after `after` whose topic
// matches pattern, up to limit of them. Every entry names its predecessor,
// so the first entry of each page tells whether something after the
// previous position was trimmed; when no entry follows `after`, the newest
// id ever added (read in the same transaction) tells.
func (b *Broker) history(ctx context.Context, pattern string, after pubsub.Position, limit int) ([]pubsub.Message, error) {
	epoch := b.relay.Epoch()
	page := int64(max(limit, 64))
	var out []pubsub.Message
	for prev := after; ; {
		start := "-"
		if prev != (pubsub.Position{}) {
			start = "(" + formatID(prev)
		}
		pipe := b.client.TxPipeline()
		rng := pipe.XRangeN(ctx, b.stream, start, "+", page)
		last := pipe.HGet(ctx, b.meta, "last")
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		xs := rng.Val()
		if len(xs) == 0 {
			if prev == (pubsub.Position{}) {
				return out, nil // from the oldest: never a gap
			}
			newest, err := parseID(last.Val())
			if err != nil || prev.Less(newest) {
				// Entries after prev were added and are gone (or, without a
				// meta hash, the whole history is).
				return nil, &pubsub.GapError{Reason: "trimmed"}
			}
			return out, nil
		}
		for k, x := range xs {
			e, err := decode(x)
			if err != nil {
				return nil, err
			}
			if e.epoch != epoch {
				return nil, &pubsub.GapError{Reason: "epoch"}
			}
			if k == 0 && prev != (pubsub.Position{}) && prev.Less(e.prev) {
				return nil, &pubsub.GapError{Reason: "trimmed"}
			}
			if pubsub.Match(pattern, e.msg.Topic) {
				out = append(out, e.msg)
				if len(out) == limit {
					return out, nil
				}
			}
			prev = e.pos
		}
		if int64(len(xs)) < page {
			return out, nil
		}
	}
}

// entry is a decoded stream entry.
type entry struct {
	msg   pubsub.Message
	epoch string
	pos   pubsub.Position // its stream id
	prev  pubsub.Position // the stream id of the entry added before it
}

// decode turns a stream entry into a message, with its epoch and position.
func decode(x redis.XMessage) (entry, error) {
	var e entry
	var err error
	if e.pos, err = parseID(x.ID); err != nil {
		return e, err
	}
	m := &e.msg
	e.epoch, _ = x.Values[fieldEpoch].(string)
	prev, _ := x.Values[fieldPrev].(string)
	packed, ok := x.Values[fieldMessage].(string)
	if e.prev, err = parseID(prev); err != nil || e.epoch == "" || !ok || !decodeMessage(packed, m) || m.Topic == "" {
		return e, fmt.Errorf("redispubsub: stream entry %s is not a message", x.ID)
	}
	m.Time = time.UnixMilli(int64(e.pos.Hi))
	m.Cursor = pubsub.MakeCursor(e.epoch, e.pos)
	return e, nil
}

// parseID reads a stream id "ms-seq" as a position.
func parseID(id string) (pubsub.Position, error) {
	ms, seq, ok := strings.Cut(id, "-")
	hi, err1 := strconv.ParseUint(ms, 10, 64)
	lo, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return pubsub.Position{}, fmt.Errorf("redispubsub: bad stream id %q", id)
	}
	return pubsub.Position{Hi: hi, Lo: lo}, nil
}

func formatID(p pubsub.Position) string {
	return strconv.FormatUint(p.Hi, 10) + "-" + strconv.FormatUint(p.Lo, 10)
}

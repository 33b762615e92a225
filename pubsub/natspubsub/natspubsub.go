package natspubsub

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults of Options.
const (
	DefaultNamespace       = "switchboard"
	DefaultMaxMsgs         = 1_000_000
	DefaultMaxAge          = 24 * time.Hour
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultHeartbeat       = 2 * time.Second
	DefaultTimeout         = 5 * time.Second
	DefaultFeedBuffer      = 8192
)

// ErrUnavailable: the NATS connection is not connected (it is reconnecting,
// or the server is down), so Publish did not hand the message to JetStream.
var ErrUnavailable = errors.New("natspubsub: engine unavailable")

// Options configures New. A nil *Options, and every zero field, means the
// default stated on the field.
type Options struct {
	// Namespace is the subject prefix of the broker: topic "a.b" is the NATS
	// subject "<Namespace>.a.b", and the stream captures "<Namespace>.>".
	// One or more dot-separated tokens of ASCII letters, digits, '-' and
	// '_'. Every node of one application uses the same Namespace. Default
	// DefaultNamespace ("switchboard").
	Namespace string
	// Stream is the name of the JetStream stream. Default: Namespace with
	// '.' replaced by '_'.
	Stream string

	// MaxMsgs bounds retention by count: the stream keeps the newest MaxMsgs
	// messages of the namespace, all topics together. Default
	// DefaultMaxMsgs; negative means no count bound.
	MaxMsgs int64
	// MaxAge bounds retention by age. Default DefaultMaxAge (24h); negative
	// means no age bound.
	MaxAge time.Duration
	// MaxBytes bounds retention by size. Default (zero) and negative: no
	// size bound, retention by MaxMsgs and MaxAge. JetStream reserves a
	// file stream's MaxBytes on disk when the stream is created, so a byte
	// bound costs its full size at once.
	MaxBytes int64
	// Storage is where the server keeps the stream: jetstream.FileStorage
	// (the zero value, the default) or jetstream.MemoryStorage.
	Storage jetstream.StorageType
	// Replicas is the stream's replication factor (1, 3 or 5 in a cluster).
	// Default 1.
	Replicas int
	// DuplicateWindow is how long JetStream remembers the IDs publishers set,
	// to store a retried Publish once. Default DefaultDuplicateWindow (2m),
	// at most MaxAge.
	DuplicateWindow time.Duration

	// Heartbeat is the idle heartbeat of the node's feed: a feed that hears
	// nothing from the server for two heartbeats restarts. Default
	// DefaultHeartbeat (2s); at least 100ms.
	Heartbeat time.Duration
	// FeedBuffer bounds the messages the feed's NATS subscription holds
	// before the node fans them out. Past it the client drops messages and
	// the feed restarts from the last one it delivered (nothing is lost).
	// Default DefaultFeedBuffer.
	FeedBuffer int
	// Timeout bounds each JetStream API call (stream info, consumer create
	// and delete, history reads), and a Publish whose context has no
	// deadline. Default DefaultTimeout (5s).
	Timeout time.Duration
	// CatchUp bounds how long Subscribe waits for the node's feed to reach
	// the stream's newest message. Default pubsub.DefaultCatchUp.
	CatchUp time.Duration
	// Local are options of the local fan-out (pubsub.MaxTopics,
	// pubsub.MaxMessageSize, pubsub.WithClock); pubsub.History is ignored,
	// the stream keeps the history.
	Local []pubsub.Option
}

func (o *Options) resolve() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Namespace == "" {
		r.Namespace = DefaultNamespace
	}
	if err := validateNamespace(r.Namespace); err != nil {
		return r, err
	}
	if r.Stream == "" {
		r.Stream = strings.ReplaceAll(r.Namespace, ".", "_")
	}
	switch {
	case r.MaxMsgs == 0:
		r.MaxMsgs = DefaultMaxMsgs
	case r.MaxMsgs < 0:
		r.MaxMsgs = -1
	}
	switch {
	case r.MaxAge == 0:
		r.MaxAge = DefaultMaxAge
	case r.MaxAge < 0:
		r.MaxAge = 0 // JetStream: no age bound
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = -1
	}
	if r.Replicas <= 0 {
		r.Replicas = 1
	}
	if r.DuplicateWindow <= 0 {
		r.DuplicateWindow = DefaultDuplicateWindow
	}
	if r.MaxAge > 0 && r.DuplicateWindow > r.MaxAge {
		r.DuplicateWindow = r.MaxAge
	}
	if r.Heartbeat <= 0 {
		r.Heartbeat = DefaultHeartbeat
	}
	r.Heartbeat = max(r.Heartbeat, 100*time.Millisecond)
	if r.FeedBuffer <= 0 {
		r.FeedBuffer = DefaultFeedBuffer
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	return r, nil
}

func validateNamespace(ns string) error {
	for tok := range strings.SplitSeq(ns, ".") {
		if tok == "" {
			return fmt.Errorf("natspubsub: namespace %q has an empty token", ns)
		}
		for _, c := range []byte(tok) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("natspubsub: namespace %q: only letters, digits, '-', '_' and '.' between tokens", ns)
			}
		}
	}
	return nil
}

// Broker is a pubsub.Backend on NATS JetStream. Every node of an
// application makes its own Broker on its own connection; together they
// behave as one broker. All methods are safe for concurrent use.
type Broker struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	opts   Options
	prefix string // Namespace + "."
	relay  *pubsub.Relay

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{} // closed when the feed goroutine has returned
}

var _ pubsub.Backend = (*Broker)(nil)

// New creates the stream, or updates its configuration to opts, and starts
// the node's feed: one JetStream consumer that follows the whole namespace.
// nc is the caller's: Close does not close it. Give nc a reconnect policy
// that fits (nats.MaxReconnects(-1) to reconnect forever); if it closes for
// good, the broker closes with it.
func New(ctx context.Context, nc *nats.Conn, opts *Options) (*Broker, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.Timeout))
	if err != nil {
		return nil, fmt.Errorf("natspubsub: %w", err)
	}
	b := &Broker{nc: nc, js: js, opts: o, prefix: o.Namespace + ".", done: make(chan struct{})}
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	b.stream, err = js.CreateOrUpdateStream(cctx, b.streamConfig())
	if err != nil {
		return nil, fmt.Errorf("natspubsub: creating stream %q: %w", o.Stream, err)
	}
	info, err := b.stream.Info(cctx)
	if err != nil {
		return nil, fmt.Errorf("natspubsub: reading stream %q: %w", o.Stream, err)
	}
	local := append([]pubsub.Option{pubsub.MaxMessageSize(maxPayload)}, o.Local...)
	b.relay = pubsub.NewRelay(pubsub.RelayConfig{
		Epoch:   epochOf(info),
		Start:   pubsub.Position{Lo: info.State.LastSeq},
		History: b.history,
		Head:    b.head,
		CatchUp: o.CatchUp,
		Options: local,
	})
	fctx, fcancel := context.WithCancel(context.Background())
	b.cancel = fcancel
	go b.run(fctx)
	return b, nil
}

// maxPayload is NATS's hard limit on a message; the server's max_payload
// (1 MiB by default) is what Publish checks.
const maxPayload = 64 << 20

func (b *Broker) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        b.opts.Stream,
		Description: "switchboard pubsub namespace " + b.opts.Namespace,
		Subjects:    []string{b.opts.Namespace + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     b.opts.MaxMsgs,
		MaxBytes:    b.opts.MaxBytes,
		MaxAge:      b.opts.MaxAge,
		Storage:     b.opts.Storage,
		Replicas:    b.opts.Replicas,
		Duplicates:  b.opts.DuplicateWindow,
	}
}

// epochOf names a stream's history: its creation time, which changes
// exactly when the stream is deleted and created again.
func epochOf(info *jetstream.StreamInfo) string {
	return strconv.FormatInt(info.Created.UnixNano(), 36)
}

// Namespace returns the broker's subject prefix.
func (b *Broker) Namespace() string { return b.opts.Namespace }

// Stream returns the name of the broker's JetStream stream.
func (b *Broker) Stream() string { return b.opts.Stream }

// Stats returns the counters of this node's local fan-out.
// Head returns the cursor of the engine's newest message (pubsub.HeadReader).
func (b *Broker) Head(ctx context.Context) (pubsub.Cursor, error) { return b.relay.Head(ctx) }

func (b *Broker) Stats() pubsub.Stats { return b.relay.Stats() }

// Publish stores m in the stream and returns its cursor once JetStream has
// acknowledged it. An error means JetStream did not acknowledge it (it may
// still have stored it, when the acknowledgement was lost: publish again
// with the same m.ID, within the DuplicateWindow, to store it once). See
// pubsub.Publisher.
func (b *Broker) Publish(ctx context.Context, m pubsub.Message) (pubsub.Cursor, error) {
	if b.closed.Load() {
		return "", pubsub.ErrClosed
	}
	if err := pubsub.ValidateTopic(m.Topic); err != nil {
		return "", err
	}
	msg := &nats.Msg{Subject: b.prefix + m.Topic, Data: m.Data, Header: encodeHeader(m.Header)}
	if m.ID != "" {
		if !nativeValue(m.ID) {
			return "", fmt.Errorf("natspubsub: message ID %q: leading or trailing blanks, CR and LF cannot be sent", m.ID)
		}
		if msg.Header == nil {
			msg.Header = make(nats.Header, 1)
		}
		msg.Header[jetstream.MsgIDHeader] = []string{m.ID}
	}
	if size, limit := msgSize(msg), b.nc.MaxPayload(); limit > 0 && int64(size) > limit {
		return "", fmt.Errorf("%w: %d bytes with headers, the server's max_payload is %d", pubsub.ErrTooLarge, size, limit)
	}
	if !b.nc.IsConnected() {
		return "", fmt.Errorf("natspubsub: publish to %q: %w (%v)", m.Topic, ErrUnavailable, b.nc.Status())
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.Timeout)
		defer cancel()
	}
	ack, err := b.js.PublishMsg(ctx, msg)
	if err != nil {
		return "", fmt.Errorf("natspubsub: publish to %q: %w", m.Topic, err)
	}
	if ack.Stream != b.opts.Stream {
		return "", fmt.Errorf("natspubsub: publish to %q was stored by stream %q, not %q", m.Topic, ack.Stream, b.opts.Stream)
	}
	return pubsub.MakeCursor(b.relay.Epoch(), pubsub.Position{Lo: ack.Sequence}), nil
}

func msgSize(m *nats.Msg) int {
	n := len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	if n > len(m.Data) {
		n += 12 // "NATS/1.0\r\n" and the blank line
	}
	return n
}

// Subscribe opens a subscription on this node. It costs no engine
// subscription: the node's one feed serves every local subscription. With
// pubsub.After or pubsub.FromOldest it first reads the stream's history
// through a short-lived consumer. See pubsub.Subscriber.
func (b *Broker) Subscribe(ctx context.Context, pattern string, opts ...pubsub.SubscribeOption) (pubsub.Subscription, error) {
	if b.closed.Load() {
		return nil, pubsub.ErrClosed
	}
	return b.relay.Subscribe(ctx, pattern, opts...)
}

// Close stops the feed (deleting its consumer when the server is
// reachable), ends every local subscription with pubsub.ErrClosed, and
// waits for the goroutines it started. It does not close the connection
// and does not delete the stream. Close is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.cancel()
		<-b.done
		_ = b.relay.Close()
	})
	return nil
}

// timeout bounds ctx by Options.Timeout.
func (b *Broker) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.opts.Timeout)
}

// head is the relay's HeadFunc: the stream's newest sequence.
func (b *Broker) head(ctx context.Context) (pubsub.Position, error) {
	ctx, cancel := b.timeout(ctx)
	defer cancel()
	info, err := b.stream.Info(ctx)
	if err != nil {
		return pubsub.Position{}, err
	}
	return pubsub.Position{Lo: info.State.LastSeq}, nil
}

// history is the relay's HistoryFunc. It reads through an ephemeral pull
// consumer filtered by the pattern, starting after `after`, then checks
// with the stream's state that nothing after `after` was trimmed before it
// was read: retention trims the oldest messages first, so the stream's
// first sequence being at most after+1 once the page is read proves it.
func (b *Broker) history(ctx context.Context, pattern string, after pubsub.Position, limit int) ([]pubsub.Message, error) {
	ctx, cancel := b.timeout(ctx)
	defer cancel()
	cfg := jetstream.ConsumerConfig{
		Description:       "switchboard history read",
		FilterSubject:     b.prefix + pattern,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: b.opts.Timeout,
	}
	if after.Lo > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after.Lo+1
	}
	cons, err := b.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer b.deleteConsumer(cons.CachedInfo().Name)
	want := limit
	if p := cons.CachedInfo().NumPending; p < uint64(want) {
		want = int(p)
	}
	var raw []jetstream.Msg
	for len(raw) < want {
		batch, err := cons.Fetch(want-len(raw), jetstream.FetchContext(ctx))
		if err != nil {
			return nil, err
		}
		n := len(raw)
		for m := range batch.Messages() {
			raw = append(raw, m)
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if len(raw) == n {
			break // fewer than pending: trimmed meanwhile, which the check below reports
		}
	}
	info, err := b.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	epoch := epochOf(info)
	if after.Lo > 0 {
		if epoch != b.relay.Epoch() {
			return nil, &pubsub.GapError{Reason: "epoch"}
		}
		if firstKept(info) > after.Lo+1 {
			return nil, &pubsub.GapError{Reason: "trimmed"}
		}
	}
	if len(raw) < want {
		return nil, fmt.Errorf("natspubsub: history read %d of %d messages", len(raw), want)
	}
	out := make([]pubsub.Message, 0, len(raw))
	for _, m := range raw {
		meta, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		out = append(out, b.decode(m.Subject(), m.Data(), m.Headers(), epoch, meta.Sequence.Stream, meta.Timestamp))
	}
	return out, nil
}

// firstKept returns the stream's first retained sequence (LastSeq+1 when it
// is empty).
func firstKept(info *jetstream.StreamInfo) uint64 {
	if info.State.Msgs == 0 {
		return info.State.LastSeq + 1
	}
	return info.State.FirstSeq
}

// deleteConsumer deletes a consumer, best effort: when it fails the server
// removes it after its InactiveThreshold anyway.
func (b *Broker) deleteConsumer(name string) {
	if !b.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	_ = b.stream.DeleteConsumer(ctx, name)
}

// decode turns a stored NATS message into a pubsub.Message.
func (b *Broker) decode(subject string, data []byte, h nats.Header, epoch string, seq uint64, ts time.Time) pubsub.Message {
	m := pubsub.Message{
		Topic:  strings.TrimPrefix(subject, b.prefix),
		Data:   data,
		Time:   ts,
		Cursor: pubsub.MakeCursor(epoch, pubsub.Position{Lo: seq}),
	}
	m.ID, m.Header = decodeHeader(h)
	if m.ID == "" {
		m.ID = string(m.Cursor)
	}
	return m
}

// Headers. User headers travel as NATS headers when NATS can carry them
// exactly; otherwise all of them travel in one header, URL-encoded.
const headerEncoded = "Switchboard-Header"

func encodeHeader(h map[string]string) nats.Header {
	if len(h) == 0 {
		return nil
	}
	nh := make(nats.Header, len(h)+1)
	for k, v := range h {
		if !nativeKey(k) || !nativeValue(v) {
			q := make(url.Values, len(h))
			for k, v := range h {
				q[k] = []string{v}
			}
			return nats.Header{headerEncoded: {q.Encode()}}
		}
		nh[k] = []string{v}
	}
	return nh
}

func decodeHeader(h nats.Header) (id string, hdr map[string]string) {
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		switch {
		case k == jetstream.MsgIDHeader:
			id = vs[0]
		case k == headerEncoded:
			q, err := url.ParseQuery(vs[0])
			if err != nil {
				continue
			}
			if hdr == nil {
				hdr = make(map[string]string, len(q))
			}
			for k, v := range q {
				hdr[k] = v[0]
			}
		case reserved(k):
		default:
			if hdr == nil {
				hdr = make(map[string]string, len(h))
			}
			hdr[k] = vs[0]
		}
	}
	return id, hdr
}

// reserved: header names the server interprets (Nats-) or this package uses.
func reserved(k string) bool {
	return hasPrefixFold(k, "nats-") || hasPrefixFold(k, "switchboard-")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func nativeKey(k string) bool {
	if k == "" || reserved(k) {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func nativeValue(v string) bool {
	if v != "" && (blank(v[0]) || blank(v[len(v)-1])) {
		return false // the header parser trims them
	}
	return !strings.ContainsAny(v, "\r\n")
}

func blank(c byte) bool { return c == ' ' || c == '\t' }

// backoffPolicy paces the feed's restarts.
var backoffPolicy = backoff.Policy{Base: 50 * time.Millisecond, Max: 5 * time.Second}

package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/ids"
)

// Defaults and bounds of the memory broker.
const (
	DefaultMaxMessageSize = 1 << 20
	DefaultMaxTopics      = 100_000
)

// ErrTooManyTopics: publishing would create a topic past the broker's
// MaxTopics bound and no idle topic could be evicted.
var ErrTooManyTopics = errors.New("pubsub: too many topics")

// Option configures a memory Broker.
type Option func(*brokerConfig)

type brokerConfig struct {
	historyCount   int
	historyAge     time.Duration
	maxMessageSize int
	maxTopics      int
	clock          clock.Clock
}

// History makes the broker retain, per topic, the last count messages, and
// (if maxAge > 0) only those younger than maxAge. Retained messages are what
// a subscription After a cursor replays. Default: nothing retained, so every
// resume after a cursor that missed something reports ErrGap.
func History(count int, maxAge time.Duration) Option {
	return func(c *brokerConfig) {
		c.historyCount = max(count, 0)
		c.historyAge = max(maxAge, 0)
		if c.historyCount == 0 && c.historyAge > 0 {
			c.historyCount = DefaultHistoryCount
		}
	}
}

// MaxMessageSize bounds len(Data) plus the bytes of the header's keys and
// values; Publish of a larger message fails with ErrTooLarge. Default
// DefaultMaxMessageSize (1 MiB).
func MaxMessageSize(n int) Option { return func(c *brokerConfig) { c.maxMessageSize = n } }

// DefaultHistoryCount is the count bound History uses when it is given only
// an age bound.
const DefaultHistoryCount = 10_000

// MaxTopics bounds how many topics the broker tracks. Past it the broker
// evicts topics that have no exact-topic subscriber (losing their history:
// a later resume on them reports ErrGap); if that is not enough, Publish to a
// new topic fails with ErrTooManyTopics. Default DefaultMaxTopics.
func MaxTopics(n int) Option { return func(c *brokerConfig) { c.maxTopics = n } }

// WithClock sets the clock used for message times, history age and Block
// timeouts. Default: the real clock.
func WithClock(c clock.Clock) Option { return func(cfg *brokerConfig) { cfg.clock = c } }

// Broker is the in-memory publish-subscribe broker: a real implementation
// for one process, and what every test in this module runs on. It keeps
// nothing across restarts: a new Broker has a new epoch, so cursors from an
// earlier one are reported as a gap rather than misread.
//
// How it works: each topic keeps its messages in a bounded ring that is both
// its retained history and the buffer of its exact-topic subscribers
// (Disconnect and DropOldest policies). Publish encodes nothing and copies
// nothing: it appends one entry and wakes the subscribers that are waiting;
// a subscriber holds only its position and takes everything between it and
// the head in one call. Wildcard subscriptions and the DropNewest and Block
// policies have a private queue of entry pointers, filled by Publish and
// grown on demand up to the subscription's buffer.
//
// All methods are safe for concurrent use.
type Broker struct {
	cfg   brokerConfig
	clock clock.Clock
	epoch string
	ids   ids.Generator
	done  chan struct{} // closed by Close
	relay bool          // messages arrive with their engine's cursor, ID and time

	// gapGen counts broker-wide gaps (a Relay's engine lost history); each
	// subscription reports ErrGap once per increment it has not seen.
	gapGen atomic.Uint64
	gapErr atomic.Pointer[GapError] // the newest broker-wide gap

	mu        sync.Mutex
	closed    bool                  // guarded by mu
	seq       uint64                // last assigned broker-wide sequence; guarded by mu
	topics    map[string]*topic     // guarded by mu
	wild      map[*privSub]struct{} // wildcard subscriptions; guarded by mu
	subs      int                   // open subscriptions; guarded by mu
	forgotten uint64                // newest seq of any deleted topic; guarded by mu
	retired   TopicStats            // counters of deleted topics; guarded by mu
}

var _ Backend = (*Broker)(nil)

// NewBroker returns a ready in-memory broker. Close it when done.
func NewBroker(opts ...Option) *Broker {
	cfg := brokerConfig{maxMessageSize: DefaultMaxMessageSize, maxTopics: DefaultMaxTopics}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxMessageSize <= 0 {
		cfg.maxMessageSize = DefaultMaxMessageSize
	}
	if cfg.maxTopics <= 0 {
		cfg.maxTopics = DefaultMaxTopics
	}
	return &Broker{
		cfg:    cfg,
		clock:  clock.Or(cfg.clock),
		epoch:  newEpoch(),
		done:   make(chan struct{}),
		topics: make(map[string]*topic),
		wild:   make(map[*privSub]struct{}),
	}
}

// newEpoch returns 8 random base32 characters: 40 bits, enough that two
// brokers a client meets never share one.
func newEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").EncodeToString(b[:])
}

// Epoch returns the broker's epoch, the part of its cursors that identifies
// this broker instance.
func (b *Broker) Epoch() string { return b.epoch }

var _ HeadReader = (*Broker)(nil)

// Head returns the cursor of the newest message published (see HeadReader).
func (b *Broker) Head(ctx context.Context) (Cursor, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return "", ErrClosed
	}
	return MakeCursor(b.epoch, Position{Lo: b.seq}), nil
}

// entry is one published message as the broker holds it. It is allocated
// once per Publish and never modified after it is appended.
type entry struct {
	msg  Message
	memo memo
	top  *topic // nil when published where nobody could read it
	seq  uint64 // broker-wide sequence
	idx  uint64 // index in its topic's ring
	buf  [64]byte
}

// ring holds a topic's entries at idx&mask. Readers load slots without
// locks and check the entry's idx to detect overwrites.
type ring struct {
	slots []atomic.Pointer[entry]
	mask  uint64
}

func newRing(n int) *ring {
	size := 1
	for size < n {
		size <<= 1
	}
	return &ring{slots: make([]atomic.Pointer[entry], size), mask: uint64(size - 1)}
}

type topic struct {
	name string
	head atomic.Uint64        // index of the next entry
	ring atomic.Pointer[ring] // replaced (grown) under Broker.mu

	// Guarded by Broker.mu.
	tail       uint64 // oldest index retained as history
	reclaimed  uint64 // slots below this index have been cleared
	lastSeq    uint64 // seq of the newest entry
	trimmedSeq uint64 // seq of the newest entry no longer retained
	shared     map[*sharedSub]struct{}
	private    map[*privSub]struct{} // exact and wildcard private subscriptions
	exact      int                   // exact-topic subscriptions (shared and private)

	wmu     sync.Mutex
	waiters []*sharedSub // parked shared readers; guarded by wmu

	published, delivered, dropped atomic.Uint64
}

// Publish appends m to its topic and delivers it to every matching
// subscription. See Publisher.
func (b *Broker) Publish(ctx context.Context, m Message) (Cursor, error) {
	if err := ValidateTopic(m.Topic); err != nil {
		return "", err
	}
	if size := messageSize(&m); size > b.cfg.maxMessageSize && !b.relay {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, b.cfg.maxMessageSize)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return "", ErrClosed
		}
		t, err := b.topicForPublish(m.Topic)
		if err != nil {
			b.mu.Unlock()
			return "", err
		}
		// A subscriber that chose Block and has no room holds the publish
		// back; wait for it without holding the lock, then start over.
		if t != nil {
			if s := t.fullBlocker(); s != nil {
				b.mu.Unlock()
				if err := s.waitForRoom(ctx, b); err != nil {
					return "", err
				}
				continue
			}
		}
		e := b.append(t, &m)
		b.mu.Unlock()
		return e.msg.Cursor, nil
	}
}

func messageSize(m *Message) int {
	n := len(m.Data)
	for k, v := range m.Header {
		n += len(k) + len(v)
	}
	return n
}

// topicForPublish returns the topic to append to, creating it when it has to
// exist: when history is retained or a wildcard subscription matches. It
// returns nil when nobody could ever read the message. Called with b.mu held.
func (b *Broker) topicForPublish(name string) (*topic, error) {
	if t := b.topics[name]; t != nil {
		return t, nil
	}
	need := b.cfg.historyCount > 0
	if !need {
		for s := range b.wild {
			if Match(s.pattern, name) {
				need = true
				break
			}
		}
	}
	if !need {
		return nil, nil
	}
	return b.createTopic(name)
}

// createTopic adds a topic, evicting idle topics when at the bound. Called
// with b.mu held.
func (b *Broker) createTopic(name string) (*topic, error) {
	if len(b.topics) >= b.cfg.maxTopics {
		b.evictIdle()
		if len(b.topics) >= b.cfg.maxTopics {
			return nil, fmt.Errorf("%w (%d)", ErrTooManyTopics, b.cfg.maxTopics)
		}
	}
	t := &topic{
		name:    name,
		shared:  make(map[*sharedSub]struct{}),
		private: make(map[*privSub]struct{}),
		// Whatever the broker forgot may have been on this topic: a cursor
		// from before then reports a gap rather than a silent hole.
		trimmedSeq: b.forgotten,
	}
	t.ring.Store(newRing(max(b.cfg.historyCount, 16)))
	for s := range b.wild {
		if Match(s.pattern, name) {
			t.private[s] = struct{}{}
			s.topics[t] = struct{}{}
		}
	}
	b.topics[name] = t
	return t, nil
}

// evictIdle deletes every topic without an exact-topic subscriber. Called
// with b.mu held.
func (b *Broker) evictIdle() {
	for _, t := range b.topics {
		if t.exact == 0 {
			for s := range t.private {
				delete(s.topics, t)
			}
			b.deleteTopic(t)
		}
	}
}

// deleteTopic forgets t. Cursors into its history now report a gap. Called
// with b.mu held.
func (b *Broker) deleteTopic(t *topic) {
	b.forgotten = max(b.forgotten, t.lastSeq)
	b.retired.Published += t.published.Load()
	b.retired.Delivered += t.delivered.Load()
	b.retired.Dropped += t.dropped.Load()
	delete(b.topics, t.name)
}

// maybeDelete deletes t when nothing needs it any more. Called with b.mu
// held.
func (b *Broker) maybeDelete(t *topic) {
	if len(t.shared) == 0 && len(t.private) == 0 && t.tail == t.head.Load() && b.topics[t.name] == t {
		b.deleteTopic(t)
	}
}

// append assigns m its sequence and cursor, stores it in t and delivers it.
// t may be nil when nobody can read the message. Called with b.mu held.
func (b *Broker) append(t *topic, m *Message) *entry {
	now := b.clock.Now()
	b.seq++
	e := &entry{msg: *m, seq: b.seq}
	e.msg.memo = &e.memo
	if b.relay {
		if e.msg.ID == "" {
			e.msg.ID = b.ids.ID(now)
		}
		if e.msg.Time.IsZero() {
			e.msg.Time = now
		}
		if t != nil {
			b.store(t, e, now)
		}
		return e
	}
	e.msg.Time = now
	buf := appendCursor(e.buf[:0], b.epoch, Position{Lo: e.seq})
	n := len(buf)
	if m.ID == "" {
		buf = b.ids.AppendID(buf, now)
	}
	if n <= len(e.buf) && len(buf) <= len(e.buf) {
		// The strings point into e.buf: e is immutable from here on and
		// lives as long as any Message copied from it.
		e.msg.Cursor = Cursor(unsafe.String(&e.buf[0], n))
		if m.ID == "" {
			e.msg.ID = unsafe.String(&e.buf[n], len(buf)-n)
		}
	} else { // an unusually long epoch: pay for real strings
		e.msg.Cursor = Cursor(buf[:n])
		if m.ID == "" {
			e.msg.ID = string(buf[n:])
		}
	}
	if t == nil {
		b.forgotten = e.seq
		return e
	}
	b.store(t, e, now)
	return e
}

// store appends e to t and delivers it. Called with b.mu held.
func (b *Broker) store(t *topic, e *entry, now time.Time) {
	h := t.head.Load()
	e.idx = h
	e.top = t
	t.lastSeq = e.seq
	t.published.Add(1)
	r := t.ring.Load()
	r.slots[h&r.mask].Store(e)
	t.head.Store(h + 1)
	b.trim(t, now)
	if h&63 == 63 {
		b.reclaim(t)
	}
	for s := range t.private {
		s.push(e, t)
	}
	t.wake()
}

// signalGap makes every open subscription report g once.
func (b *Broker) signalGap(g *GapError) {
	b.gapErr.Store(g)
	b.gapGen.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.topics {
		t.wake()
		for s := range t.private {
			s.signal()
		}
	}
	for s := range b.wild {
		s.signal()
	}
}

// pendingGap returns the gap a subscription that has seen gap generation
// *seen must report, if any, and records it as seen.
func (b *Broker) pendingGap(seen *uint64) *GapError {
	g := b.gapGen.Load()
	if g == *seen {
		return nil
	}
	*seen = g
	if e := b.gapErr.Load(); e != nil {
		c := *e
		return &c
	}
	return &GapError{Reason: "engine history lost"}
}

// trim moves t's history tail past what the count and age bounds no longer
// retain. Called with b.mu held.
func (b *Broker) trim(t *topic, now time.Time) {
	h := t.head.Load()
	tail := t.tail
	keep := uint64(b.cfg.historyCount)
	if h-tail > keep {
		tail = h - keep
	}
	r := t.ring.Load()
	if b.cfg.historyAge > 0 {
		cutoff := now.Add(-b.cfg.historyAge)
		for tail < h {
			e := r.slots[tail&r.mask].Load()
			if e == nil || e.idx != tail || !e.msg.Time.Before(cutoff) {
				break
			}
			tail++
		}
	}
	if tail > t.tail {
		if e := r.slots[(tail-1)&r.mask].Load(); e != nil && e.idx == tail-1 {
			t.trimmedSeq = e.seq
		} else {
			t.trimmedSeq = t.lastSeq
		}
		t.tail = tail
	}
}

// reclaim clears ring slots that neither history nor any reader needs, so
// their messages can be collected. Called with b.mu held.
func (b *Broker) reclaim(t *topic) {
	bound := t.tail
	for s := range t.shared {
		bound = min(bound, s.pos.Load())
	}
	r := t.ring.Load()
	if h := t.head.Load(); h > uint64(len(r.slots)) {
		t.reclaimed = max(t.reclaimed, h-uint64(len(r.slots)))
	}
	for i := t.reclaimed; i < bound; i++ {
		slot := &r.slots[i&r.mask]
		if e := slot.Load(); e != nil && e.idx == i {
			slot.CompareAndSwap(e, nil)
		}
	}
	t.reclaimed = max(t.reclaimed, bound)
}

// ensureCapacity grows t's ring so that it holds n entries behind the head
// besides history. Called with b.mu held.
func (b *Broker) ensureCapacity(t *topic, n int) {
	need := n + b.cfg.historyCount
	old := t.ring.Load()
	if len(old.slots) >= need {
		return
	}
	r := newRing(need)
	h := t.head.Load()
	lo := uint64(0)
	if h > uint64(len(old.slots)) {
		lo = h - uint64(len(old.slots))
	}
	for i := lo; i < h; i++ {
		if e := old.slots[i&old.mask].Load(); e != nil && e.idx == i {
			r.slots[i&r.mask].Store(e)
		}
	}
	t.ring.Store(r)
}

// wake signals every parked shared reader of t.
func (t *topic) wake() {
	t.wmu.Lock()
	for i, s := range t.waiters {
		s.parked = false
		select {
		case s.wake <- struct{}{}:
		default:
		}
		t.waiters[i] = nil
	}
	t.waiters = t.waiters[:0]
	t.wmu.Unlock()
}

// fullBlocker returns a Block subscription of t that has no room. Called with
// b.mu held.
func (t *topic) fullBlocker() *privSub {
	for s := range t.private {
		if s.cfg.Overflow == Block && s.full() {
			return s
		}
	}
	return nil
}

// Subscribe opens a subscription to pattern. See Subscriber.
func (b *Broker) Subscribe(ctx context.Context, pattern string, opts ...SubscribeOption) (Subscription, error) {
	if err := ValidatePattern(pattern); err != nil {
		return nil, err
	}
	cfg := NewSubscribeConfig(opts...)
	var from uint64 // continue after this seq
	var gap *GapError
	if cfg.After != "" {
		epoch, pos, err := cfg.After.Parse()
		if err != nil {
			return nil, err
		}
		if epoch != b.epoch || pos.Hi != 0 {
			gap = &GapError{After: cfg.After, Reason: "epoch"}
		} else {
			from = pos.Lo
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	replay := cfg.After != "" || cfg.FromOldest
	if gap == nil && cfg.After != "" && from > b.seq {
		from = b.seq // a cursor from the future of this epoch: live only
	}

	var sub Subscription
	if !IsWildcard(pattern) && (cfg.Overflow == Disconnect || cfg.Overflow == DropOldest) {
		t := b.topics[pattern]
		if t == nil {
			var err error
			if t, err = b.createTopic(pattern); err != nil {
				return nil, err
			}
		}
		now := b.clock.Now()
		b.trim(t, now)
		if gap == nil && cfg.After != "" && t.trimmedSeq > from {
			gap = &GapError{After: cfg.After, Reason: b.gapReason()}
		}
		b.ensureCapacity(t, cfg.Buffer)
		s := &sharedSub{b: b, t: t, cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{})}
		h := t.head.Load()
		pos := h
		switch {
		case gap != nil && cfg.OnGap == ResumeFromNow:
		case gap != nil || cfg.FromOldest:
			pos = t.tail
		case replay:
			pos = t.firstAfter(from)
		}
		s.pos.Store(pos)
		s.liveFrom = h
		s.gap = gap
		s.gapSeen = b.gapGen.Load()
		t.shared[s] = struct{}{}
		t.exact++
		s.stop = context.AfterFunc(ctx, func() { s.end(ctx.Err()) })
		sub = s
	} else {
		s := &privSub{
			b: b, pattern: pattern, cfg: cfg, wild: IsWildcard(pattern),
			wake: make(chan struct{}, 1), room: make(chan struct{}, 1), done: make(chan struct{}),
			topics: make(map[*topic]struct{}),
		}
		var matched []*topic
		if s.wild {
			for name, t := range b.topics {
				if Match(pattern, name) {
					matched = append(matched, t)
				}
			}
			b.wild[s] = struct{}{}
		} else {
			t := b.topics[pattern]
			if t == nil {
				var err error
				if t, err = b.createTopic(pattern); err != nil {
					return nil, err
				}
			}
			t.exact++
			matched = append(matched, t)
		}
		now := b.clock.Now()
		for _, t := range matched {
			b.trim(t, now)
			if gap == nil && cfg.After != "" && t.trimmedSeq > from {
				gap = &GapError{After: cfg.After, Reason: b.gapReason()}
			}
		}
		if gap == nil && cfg.After != "" && s.wild && b.forgotten > from {
			gap = &GapError{After: cfg.After, Reason: b.gapReason()}
		}
		if replay && !(gap != nil && cfg.OnGap == ResumeFromNow) {
			if gap != nil || cfg.FromOldest {
				from = 0
			}
			s.replay = collectReplay(matched, from)
		}
		for _, t := range matched {
			t.private[s] = struct{}{}
			s.topics[t] = struct{}{}
		}
		s.gap = gap
		s.gapSeen = b.gapGen.Load()
		s.stop = context.AfterFunc(ctx, func() { s.end(ctx.Err()) })
		sub = s
	}
	b.subs++
	return sub, nil
}

func (b *Broker) gapReason() string {
	if b.cfg.historyCount == 0 {
		return "not retained"
	}
	return "trimmed"
}

// firstAfter returns the index of t's first retained entry whose seq is
// greater than seq, or the head. Called with b.mu held.
func (t *topic) firstAfter(seq uint64) uint64 {
	r := t.ring.Load()
	lo, hi := t.tail, t.head.Load()
	for lo < hi { // entries are in seq order: binary search
		mid := lo + (hi-lo)/2
		if e := r.slots[mid&r.mask].Load(); e != nil && e.seq <= seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// collectReplay returns the retained entries of topics after seq, in
// broker-wide order. Called with b.mu held.
func collectReplay(topics []*topic, seq uint64) []*entry {
	var out []*entry
	for _, t := range topics {
		r := t.ring.Load()
		for i, h := t.firstAfter(seq), t.head.Load(); i < h; i++ {
			if e := r.slots[i&r.mask].Load(); e != nil && e.idx == i {
				out = append(out, e)
			}
		}
	}
	if len(topics) > 1 {
		sortEntries(out)
	}
	return out
}

// Close ends every subscription (their readers get ErrClosed) and makes
// later Publish and Subscribe calls fail with ErrClosed. It does not wait
// for readers.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
	return nil
}

// Stats is a snapshot of a broker's counters.
type Stats struct {
	Topics      int // topics tracked now
	Subscribers int // open subscriptions
	Published   uint64
	Delivered   uint64 // messages handed to subscribers
	Dropped     uint64 // messages a subscription's overflow policy dropped
	PerTopic    map[string]TopicStats
}

// TopicStats are the counters of one topic. Deliveries to wildcard
// subscriptions count under the topic of the message.
type TopicStats struct {
	Subscribers int // exact-topic subscriptions
	Retained    int // messages in history
	Published   uint64
	Delivered   uint64
	Dropped     uint64
}

// Stats returns the broker's counters, in total and per topic.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Stats{
		Topics:      len(b.topics),
		Subscribers: b.subs,
		Published:   b.seq, // every publish, including those nobody could read
		Delivered:   b.retired.Delivered,
		Dropped:     b.retired.Dropped,
		PerTopic:    make(map[string]TopicStats, len(b.topics)),
	}
	// Messages published where nobody could read them count too.
	for _, t := range b.topics {
		ts := TopicStats{
			Subscribers: t.exact,
			Retained:    int(t.head.Load() - t.tail),
			Published:   t.published.Load(),
			Delivered:   t.delivered.Load(),
			Dropped:     t.dropped.Load(),
		}
		s.PerTopic[t.name] = ts
		s.Delivered += ts.Delivered
		s.Dropped += ts.Dropped
	}
	return s
}

// removeShared detaches a closed shared subscription. Called with b.mu held.
func (b *Broker) removeShared(s *sharedSub) {
	if _, ok := s.t.shared[s]; !ok {
		return
	}
	delete(s.t.shared, s)
	s.t.exact--
	b.subs--
	s.t.wmu.Lock()
	if s.parked {
		s.parked = false
		s.t.waiters = slices.DeleteFunc(s.t.waiters, func(w *sharedSub) bool { return w == s })
	}
	s.t.wmu.Unlock()
	b.maybeDelete(s.t)
}

// removePrivate detaches a closed private subscription. Called with b.mu
// held.
func (b *Broker) removePrivate(s *privSub) {
	if s.removed {
		return
	}
	s.removed = true
	b.subs--
	delete(b.wild, s)
	for t := range s.topics {
		delete(t.private, s)
		if !s.wild {
			t.exact--
		}
		b.maybeDelete(t)
	}
	clear(s.topics)
}

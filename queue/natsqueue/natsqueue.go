package natsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/queue"
)

// Defaults and bounds of Options.
const (
	DefaultNamespace      = "sbqueue"
	DefaultDedupWindow    = queue.DefaultDedupWindow
	DefaultMaxMsgs        = 10_000_000
	DefaultMaxMessageSize = 256 << 10
	DefaultMaxDead        = 100_000
	DefaultMaxDeliver     = 20
	DefaultMaxInFlight    = 10_000
	DefaultRecheck        = time.Second
	DefaultTimeout        = 5 * time.Second
	DefaultStatsFlush     = time.Second
	DefaultErrorTTL       = 7 * 24 * time.Hour
)

// ErrUnavailable: the NATS connection is down (reconnecting, or the server
// is gone), so the call was not handed to JetStream. Nothing was stored;
// retry once the connection is back.
var ErrUnavailable = errors.New("natsqueue: engine unavailable")

// Options configures New. A nil *Options, and every zero field, means the
// default stated on the field.
type Options struct {
	// Namespace prefixes every subject, stream and bucket of the backend:
	// backends with the same Namespace on the same server share their
	// queues. One or more dot-separated tokens of ASCII letters, digits,
	// '-' and '_'. Default DefaultNamespace ("sbqueue").
	Namespace string
	// Storage is where the server keeps the streams: jetstream.FileStorage
	// (the zero value, the default; survives a server restart) or
	// jetstream.MemoryStorage.
	Storage jetstream.StorageType
	// Replicas is the streams' replication factor (1, 3 or 5 in a
	// cluster). Default 1.
	Replicas int
	// DedupWindow is how long a Message.DedupKey is remembered: the work
	// stream's duplicate window. Default DefaultDedupWindow (5m).
	DedupWindow time.Duration
	// MaxMsgs and MaxBytes bound the work stream, all queues of the
	// namespace together (visible, leased and nack-retried messages). An
	// Enqueue past either fails with queue.ErrQueueFull. Default
	// DefaultMaxMsgs (10,000,000) messages and no byte bound (zero or
	// negative MaxBytes): JetStream reserves a file stream's MaxBytes on
	// disk when the stream is created, so a byte bound costs its full size
	// at once; the count and MaxMessageSize bound the stream instead. The
	// delay stream has the same bounds.
	MaxMsgs  int64
	MaxBytes int64
	// MaxMessageSize bounds len(Body) plus the header's keys and values; a
	// larger message fails with queue.ErrTooLarge. Default
	// DefaultMaxMessageSize (256 KiB); at most the server's max_payload
	// less room for this package's headers.
	MaxMessageSize int
	// MaxDead bounds the dead letters kept per queue; at the bound the
	// oldest is discarded (Stats.DeadDropped is not counted on this
	// engine). Default DefaultMaxDead (100,000).
	MaxDead int64
	// MaxDeliver bounds the deliveries of a message that no consumer
	// settles (a consumer that crashes on it every time): a Receive that
	// gets a message for the MaxDeliver+1st time dead-letters it instead of
	// returning it. The Worker's MaxAttempts handles messages whose handler
	// fails; this handles those whose consumer dies. Default
	// DefaultMaxDeliver (20); negative means no bound.
	MaxDeliver int
	// MaxInFlight bounds the leased messages of one queue and priority
	// level (the consumers' MaxAckPending); past it Receive returns fewer
	// messages until leases end. Default DefaultMaxInFlight (10,000).
	MaxInFlight int
	// Recheck bounds how long the backend goes by what it knows of which
	// priority levels hold messages (what it last read from the stream,
	// and the levels it has published to since) before it reads them
	// again: a message another backend puts on a level that held nothing
	// is received within Recheck (at once when the levels this backend
	// knows hold nothing visible), and a waiting Receive, which waits on
	// one level (the highest holding messages) and is woken at once for
	// that level, sees a message made visible on another level within
	// Recheck. Default DefaultRecheck (1s); at least 10ms.
	Recheck time.Duration
	// Timeout bounds each JetStream call made without a deadline of its
	// own (stream and consumer management, acks, publishes whose context
	// has no deadline). Default DefaultTimeout (5s).
	Timeout time.Duration
	// StatsFlush is how often the backend adds the counts of acks, failures
	// and retries it made to the queue's shared counters. Stats flushes
	// the calling backend's counts first, so they are exact for one
	// backend; other backends' counts lag by up to StatsFlush. Default
	// DefaultStatsFlush (1s).
	StatsFlush time.Duration
	// ErrorTTL is how long the last error of a nacked message is kept for
	// its next delivery (a nak carries no data, so the error waits in a
	// bucket with this age bound). Default DefaultErrorTTL (7 days).
	ErrorTTL time.Duration
}

func (o *Options) resolve() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Namespace == "" {
		r.Namespace = DefaultNamespace
	}
	for tok := range strings.SplitSeq(r.Namespace, ".") {
		if tok == "" {
			return r, fmt.Errorf("natsqueue: namespace %q has an empty token", r.Namespace)
		}
		for _, c := range []byte(tok) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return r, fmt.Errorf("natsqueue: namespace %q: only letters, digits, '-', '_' and '.' between tokens", r.Namespace)
			}
		}
	}
	if r.Replicas <= 0 {
		r.Replicas = 1
	}
	if r.DedupWindow <= 0 {
		r.DedupWindow = DefaultDedupWindow
	}
	if r.MaxMsgs <= 0 {
		r.MaxMsgs = DefaultMaxMsgs
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = -1 // no reservation: see Options.MaxBytes
	}
	if r.MaxMessageSize <= 0 {
		r.MaxMessageSize = DefaultMaxMessageSize
	}
	if r.MaxDead <= 0 {
		r.MaxDead = DefaultMaxDead
	}
	if r.MaxDeliver == 0 {
		r.MaxDeliver = DefaultMaxDeliver
	}
	if r.MaxInFlight <= 0 {
		r.MaxInFlight = DefaultMaxInFlight
	}
	if r.Recheck <= 0 {
		r.Recheck = DefaultRecheck
	}
	r.Recheck = max(r.Recheck, 10*time.Millisecond)
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	if r.ErrorTTL <= 0 {
		r.ErrorTTL = DefaultErrorTTL
	}
	if r.StatsFlush <= 0 {
		r.StatsFlush = DefaultStatsFlush
	}
	return r, nil
}

// Headers this package sets on the messages it stores.
const (
	hID     = "Sb-Id"  // message id, on copies (retries, moves, redrives)
	hEnq    = "Sb-Enq" // first enqueue, unix nanoseconds
	hAtt    = "Sb-Att" // deliveries made before this copy
	hErr    = "Sb-Err" // last error
	hPri    = "Sb-Pri" // priority, on delayed and dead copies
	hDue    = "Sb-Due" // when a delayed copy becomes visible, unix nanoseconds
	hHeader = "Sb-Hdr" // the user's header, JSON
	hMsgID  = "Nats-Msg-Id"
	apiNext = "$JS.API.CONSUMER.MSG.NEXT."
)

// Backend is a queue.Backend on NATS JetStream. Every process makes its
// own Backend on its own connection; with the same Namespace they share
// the queues. All methods are safe for concurrent use.
type Backend struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts Options
	ns   string // Namespace + "."

	work, delay, dead jetstream.Stream
	kv                jetstream.KeyValue // pause flags ("p.<queue>") and counters ("s.<queue>")
	errs              jetstream.KeyValue // last errors of nacked messages, by queue and sequence

	pmu  sync.Mutex
	idle []*inbox // pull inboxes kept for reuse; guarded by pmu

	closed atomic.Bool
	done   chan struct{} // closed by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the watcher, the flusher and the movers

	mu     sync.Mutex
	queues map[string]*qstate // by queue name; guarded by mu

	lmu       sync.Mutex
	leases    map[queue.Receipt]*lease // deliveries in hand; guarded by lmu
	sweepSize int                      // len(leases) after the last sweep; guarded by lmu
}

var _ queue.Backend = (*Backend)(nil)

// qstate is what the backend keeps about one queue.
type qstate struct {
	name, tok string

	mu        sync.Mutex
	ackWait   map[int]time.Duration // level → the consumer's AckWait, once made; guarded by mu
	mover     bool                  // the delay mover runs; guarded by mu
	delayCons bool                  // the delay consumer exists; guarded by mu
	paused    bool                  // guarded by mu
	nacked    map[uint64]time.Time  // sequences this backend nacked, not yet seen again, and when due; guarded by mu
	changed   chan struct{}         // closed and replaced when paused changes; guarded by mu

	processed, failed, retried atomic.Uint64 // counts not yet flushed

	// The levels that may hold messages, a bit per level (see occupancy):
	// occ as last read from the stream, at occAt (unix nanoseconds; 0 for
	// never), with the levels this backend has published to since; dirty
	// the levels published to since the last read began.
	occ, dirty atomic.Uint32
	occAt      atomic.Int64
	occMu      sync.Mutex // held while occ is read from the stream
}

// lease is one delivery in hand.
type lease struct {
	q        *qstate
	deadline time.Time
	ackWait  time.Duration
	seq      uint64 // stream sequence of the delivered copy
	d        queue.Delivery
	level    int
}

// New creates (or updates) the namespace's streams and bucket and returns
// a ready backend. nc is the caller's: Close does not close it. Give nc a
// reconnect policy that fits (nats.MaxReconnects(-1) to reconnect
// forever); the backend survives the connection going away and coming
// back.
func New(ctx context.Context, nc *nats.Conn, opts *Options) (*Backend, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.Timeout))
	if err != nil {
		return nil, fmt.Errorf("natsqueue: %w", err)
	}
	base := strings.ReplaceAll(o.Namespace, ".", "_")
	b := &Backend{
		nc: nc, js: js, opts: o, ns: o.Namespace + ".",
		done: make(chan struct{}), queues: make(map[string]*qstate), leases: make(map[queue.Receipt]*lease),
	}
	cctx, cancel := context.WithTimeout(ctx, 2*o.Timeout)
	defer cancel()
	streams := []struct {
		s   *jetstream.Stream
		cfg jetstream.StreamConfig
	}{
		{&b.work, jetstream.StreamConfig{
			Name: base + "_work", Subjects: []string{b.ns + "q.>"}, Retention: jetstream.WorkQueuePolicy,
			MaxMsgs: o.MaxMsgs, MaxBytes: o.MaxBytes, Discard: jetstream.DiscardNew, Duplicates: o.DedupWindow,
			MaxMsgSize: int32(o.MaxMessageSize + 16<<10), Storage: o.Storage, Replicas: o.Replicas,
		}},
		{&b.delay, jetstream.StreamConfig{
			Name: base + "_delay", Subjects: []string{b.ns + "d.>"}, Retention: jetstream.WorkQueuePolicy,
			MaxMsgs: o.MaxMsgs, MaxBytes: o.MaxBytes, Discard: jetstream.DiscardNew, Duplicates: o.DedupWindow,
			MaxMsgSize: int32(o.MaxMessageSize + 16<<10), Storage: o.Storage, Replicas: o.Replicas,
		}},
		{&b.dead, jetstream.StreamConfig{
			Name: base + "_dead", Subjects: []string{b.ns + "x.>"}, Retention: jetstream.LimitsPolicy,
			MaxMsgsPerSubject: o.MaxDead, Discard: jetstream.DiscardOld, Duplicates: o.DedupWindow,
			Storage: o.Storage, Replicas: o.Replicas,
		}},
	}
	for _, s := range streams {
		if *s.s, err = js.CreateOrUpdateStream(cctx, s.cfg); err != nil {
			return nil, fmt.Errorf("natsqueue: creating stream %q: %w", s.cfg.Name, err)
		}
	}
	b.kv, err = js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
		Bucket: base + "_ctl", History: 1, Storage: o.Storage, Replicas: o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natsqueue: creating bucket %q: %w", base+"_ctl", err)
	}
	b.errs, err = js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
		Bucket: base + "_err", History: 1, TTL: o.ErrorTTL, Storage: o.Storage, Replicas: o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natsqueue: creating bucket %q: %w", base+"_err", err)
	}
	bg, stop := context.WithCancel(context.Background())
	b.cancel = stop
	w, err := b.kv.Watch(cctx, "p.*", jetstream.IgnoreDeletes())
	if err != nil {
		stop()
		return nil, fmt.Errorf("natsqueue: watching pauses: %w", err)
	}
	b.wg.Go(func() { b.watchPauses(w) })
	b.wg.Go(func() { b.flushLoop(bg) })
	go func() { <-bg.Done(); _ = w.Stop() }()
	return b, nil
}

// Close ends every waiting Receive with queue.ErrClosed, makes every
// later call fail with it, flushes the counts of this backend and stops
// its goroutines (the pause watcher, the counter flusher, the delay
// movers), waiting for them. The messages stay in the engine. Close does
// not close the connection. It is idempotent.
func (b *Backend) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(b.done)
	b.cancel()
	b.wg.Wait()
	b.dropInboxes()
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	b.mu.Lock()
	qs := make([]*qstate, 0, len(b.queues))
	for _, q := range b.queues {
		qs = append(qs, q)
	}
	b.mu.Unlock()
	for _, q := range qs {
		_ = b.flush(ctx, q)
	}
	return nil
}

// token is the queue name as one subject token: '.' becomes '='.
func token(name string) string { return strings.ReplaceAll(name, ".", "=") }

func (b *Backend) queue(name string) (*qstate, error) {
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.queues[name]
	if !ok {
		q = &qstate{name: name, tok: token(name), ackWait: make(map[int]time.Duration), nacked: make(map[uint64]time.Time), changed: make(chan struct{})}
		b.queues[name] = q
	}
	return q, nil
}

func level(priority int) int { return priority - queue.MinPriority }

func (b *Backend) workSubject(q *qstate, lvl int) string {
	return b.ns + "q." + q.tok + "." + fmt.Sprintf("%02d", lvl)
}
func (b *Backend) delaySubject(q *qstate) string { return b.ns + "d." + q.tok }
func (b *Backend) deadSubject(q *qstate) string  { return b.ns + "x." + q.tok }

func consumerName(q *qstate, lvl int) string { return q.tok + "_" + fmt.Sprintf("%02d", lvl) }

// callCtx bounds ctx by Options.Timeout when it has no deadline.
func (b *Backend) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.opts.Timeout)
}

// check reports ErrClosed after Close and ErrUnavailable while the
// connection is down.
func (b *Backend) check() error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	if !b.nc.IsConnected() {
		return ErrUnavailable
	}
	return nil
}

// wrap turns engine errors into the queue package's where one fits.
func (b *Backend) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if b.closed.Load() {
		return queue.ErrClosed
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("natsqueue: %s: %w", op, queue.ErrTooLarge)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return fmt.Errorf("natsqueue: %s: %w", op, queue.ErrTooLarge)
	case errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum"):
		return fmt.Errorf("natsqueue: %s: %w: %v", op, queue.ErrQueueFull, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("natsqueue: %s: %w: %v", op, ErrUnavailable, err)
	}
	return fmt.Errorf("natsqueue: %s: %w", op, err)
}

func messageSize(m queue.Message) int {
	n := len(m.Body)
	for k, v := range m.Header {
		n += len(k) + len(v)
	}
	return n
}

// Enqueue implements queue.Backend. Each message is stored with one
// acknowledged publish; a batch is published pipelined and waits for every
// acknowledgement. JetStream 2.9 has no atomic multi-message publish, so a
// batch that fails part way may have stored its first messages: give
// messages a DedupKey to make the retry store each exactly once.
func (b *Backend) Enqueue(ctx context.Context, name string, msgs []queue.Message) ([]queue.EnqueueResult, error) {
	for _, m := range msgs {
		if messageSize(m) > b.opts.MaxMessageSize {
			return nil, queue.ErrTooLarge
		}
	}
	q, err := b.queue(name)
	if err != nil {
		return nil, err
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]*nats.Msg, len(msgs))
	delayed := make([]bool, len(msgs))
	for i, m := range msgs {
		nm := nats.NewMsg("")
		if len(m.Header) > 0 {
			hj, _ := json.Marshal(m.Header)
			nm.Header.Set(hHeader, string(hj))
		}
		if m.DedupKey != "" {
			nm.Header.Set(hMsgID, q.tok+"/"+m.DedupKey)
		}
		due := m.RunAt
		if m.Delay > 0 {
			due = now.Add(m.Delay)
		}
		if due.After(now) {
			delayed[i] = true
			nm.Subject = b.delaySubject(q)
			nm.Header.Set(hDue, strconv.FormatInt(due.UnixNano(), 10))
			nm.Header.Set(hPri, strconv.Itoa(m.Priority))
			nm.Header.Set(hEnq, strconv.FormatInt(now.UnixNano(), 10))
		} else {
			nm.Subject = b.workSubject(q, level(m.Priority))
		}
		nm.Data = m.Body
		out[i] = nm
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	acks := make([]*jetstream.PubAck, len(msgs))
	if len(out) == 1 {
		acks[0], err = b.js.PublishMsg(cctx, out[0])
		if err != nil {
			return nil, b.wrap("enqueue", err)
		}
	} else {
		futures := make([]jetstream.PubAckFuture, len(out))
		for i, nm := range out {
			if futures[i], err = b.js.PublishMsgAsync(nm); err != nil {
				return nil, b.wrap("enqueue", err)
			}
		}
		for i, f := range futures {
			select {
			case a := <-f.Ok():
				acks[i] = a
			case err := <-f.Err():
				return nil, b.wrap("enqueue", err)
			case <-cctx.Done():
				return nil, b.wrap("enqueue", cctx.Err())
			}
		}
	}
	res := make([]queue.EnqueueResult, len(msgs))
	var set uint32
	for i, a := range acks {
		prefix := "w"
		if delayed[i] {
			prefix = "d"
		} else {
			set |= 1 << level(msgs[i].Priority)
		}
		res[i] = queue.EnqueueResult{ID: prefix + strconv.FormatUint(a.Sequence, 10), Duplicate: a.Duplicate}
	}
	q.published(set)
	return res, nil
}

// Pause implements queue.Backend. JetStream 2.9 has no consumer pause
// (2.11 does): the flag lives in the namespace's bucket, every backend
// watches it, and a paused queue's Receive waits without pulling.
func (b *Backend) Pause(ctx context.Context, name string) error { return b.setPaused(ctx, name, true) }

// Resume implements queue.Backend.
func (b *Backend) Resume(ctx context.Context, name string) error {
	return b.setPaused(ctx, name, false)
}

func (b *Backend) setPaused(ctx context.Context, name string, paused bool) error {
	q, err := b.queue(name)
	if err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	v := "0"
	if paused {
		v = "1"
	}
	if _, err := b.kv.PutString(cctx, "p."+q.tok, v); err != nil {
		return b.wrap("pause", err)
	}
	b.notePaused(q, paused)
	return nil
}

func (b *Backend) notePaused(q *qstate, paused bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.paused != paused {
		q.paused = paused
		close(q.changed)
		q.changed = make(chan struct{})
	}
}

// watchPauses keeps every queue's paused flag in step with the bucket.
func (b *Backend) watchPauses(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e == nil {
			continue
		}
		tok := strings.TrimPrefix(e.Key(), "p.")
		q, err := b.queue(strings.ReplaceAll(tok, "=", "."))
		if err != nil {
			continue // closing: the channel ends when the watcher stops
		}
		b.notePaused(q, string(e.Value()) == "1")
	}
}

// flushLoop adds the local counts to the shared counters every
// StatsFlush.
func (b *Backend) flushLoop(ctx context.Context) {
	t := time.NewTicker(b.opts.StatsFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		qs := make([]*qstate, 0, len(b.queues))
		for _, q := range b.queues {
			qs = append(qs, q)
		}
		b.mu.Unlock()
		for _, q := range qs {
			fctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
			_ = b.flush(fctx, q) // kept for the next round on failure
			cancel()
		}
	}
}

// counters are a queue's shared counts, stored as "processed failed
// retried" under "s.<queue>".
type counters struct{ processed, failed, retried uint64 }

func parseCounters(v []byte) counters {
	var c counters
	f := strings.Fields(string(v))
	if len(f) == 3 {
		c.processed, _ = strconv.ParseUint(f[0], 10, 64)
		c.failed, _ = strconv.ParseUint(f[1], 10, 64)
		c.retried, _ = strconv.ParseUint(f[2], 10, 64)
	}
	return c
}

// flush adds q's unflushed counts to its shared counters with a
// compare-and-set, and returns the counters after it.
func (b *Backend) flush(ctx context.Context, q *qstate) error {
	p, f, r := q.processed.Swap(0), q.failed.Swap(0), q.retried.Swap(0)
	if p == 0 && f == 0 && r == 0 {
		return nil
	}
	key := "s." + q.tok
	for {
		var c counters
		var rev uint64
		e, err := b.kv.Get(ctx, key)
		switch {
		case err == nil:
			c, rev = parseCounters(e.Value()), e.Revision()
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			q.processed.Add(p)
			q.failed.Add(f)
			q.retried.Add(r)
			return err
		}
		v := fmt.Sprintf("%d %d %d", c.processed+p, c.failed+f, c.retried+r)
		if rev == 0 {
			_, err = b.kv.Create(ctx, key, []byte(v))
		} else {
			_, err = b.kv.Update(ctx, key, []byte(v), rev)
		}
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // another backend flushed first: read again
		}
		q.processed.Add(p)
		q.failed.Add(f)
		q.retried.Add(r)
		return err
	}
}

// Stats implements queue.Backend. Depth and InFlight come from the
// consumers (a message whose lease ran out counts as in flight until it is
// delivered again); Delayed and Dead from the delay and dead-letter
// streams; Processed, Failed and Retried from the shared counters, with
// this backend's counts flushed first.
func (b *Backend) Stats(ctx context.Context, name string) (queue.Stats, error) {
	q, err := b.queue(name)
	if err != nil {
		return queue.Stats{}, err
	}
	if err := b.check(); err != nil {
		return queue.Stats{}, err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	var s queue.Stats
	if err := b.flush(cctx, q); err != nil {
		return s, b.wrap("stats", err)
	}
	levels, total, err := b.levels(cctx, q)
	if err != nil {
		return s, err
	}
	for _, lvl := range levels {
		c, err := b.work.Consumer(cctx, consumerName(q, lvl))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return s, b.wrap("stats", err)
		}
		s.InFlight += c.CachedInfo().NumAckPending
	}
	// Nacked messages stay pending in the consumer until delivered again:
	// those this backend nacked count as delayed or visible instead.
	now := time.Now()
	nackDelayed, nackVisible := 0, 0
	q.mu.Lock()
	for seq, due := range q.nacked {
		switch {
		case due.Before(now.Add(-time.Minute)):
			delete(q.nacked, seq)
		case due.After(now):
			nackDelayed++
		default:
			nackVisible++
		}
	}
	q.mu.Unlock()
	s.InFlight = max(s.InFlight-nackDelayed-nackVisible, 0)
	s.Depth = max(total-s.InFlight-nackDelayed, 0)
	for _, x := range []struct {
		st   jetstream.Stream
		subj string
		n    *int
	}{{b.delay, b.delaySubject(q), &s.Delayed}, {b.dead, b.deadSubject(q), &s.Dead}} {
		info, err := x.st.Info(cctx, jetstream.WithSubjectFilter(x.subj))
		if err != nil {
			return s, b.wrap("stats", err)
		}
		*x.n = int(info.State.Subjects[x.subj])
	}
	s.Delayed += nackDelayed
	e, err := b.kv.Get(cctx, "s."+q.tok)
	switch {
	case err == nil:
		c := parseCounters(e.Value())
		s.Processed, s.Failed, s.Retried = c.processed, c.failed, c.retried
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return s, b.wrap("stats", err)
	}
	if total > 0 {
		m, err := b.work.GetMsg(cctx, 1, jetstream.WithGetMsgSubject(b.ns+"q."+q.tok+".*"))
		if err == nil {
			s.OldestAge = max(time.Since(m.Time), 0)
		}
	}
	q.mu.Lock()
	s.Paused = q.paused
	q.mu.Unlock()
	return s, nil
}

// levels returns the priority levels of q that hold messages in the work
// stream, highest first, and how many they hold together.
func (b *Backend) levels(ctx context.Context, q *qstate) ([]int, int, error) {
	info, err := b.work.Info(ctx, jetstream.WithSubjectFilter(b.ns+"q."+q.tok+".*"))
	if err != nil {
		return nil, 0, b.wrap("stream info", err)
	}
	var levels []int
	total := 0
	for subj, n := range info.State.Subjects {
		i := strings.LastIndexByte(subj, '.')
		lvl, err := strconv.Atoi(subj[i+1:])
		if err != nil || n == 0 {
			continue
		}
		levels = append(levels, lvl)
		total += int(n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(levels)))
	return levels, total, nil
}

// published records that this backend has stored messages on the levels
// of bits (a bit per level).
func (q *qstate) published(bits uint32) {
	q.occ.Or(bits)
	q.dirty.Or(bits)
}

// occupancy returns the levels of q that may hold messages, highest first.
// It reads them from the stream (one stream-info call) when fresh is set
// or its last read is Options.Recheck old; in between, it goes by that
// read and the levels this backend has published to since. So one
// backend's own enqueues are seen at once, and another backend's
// enqueues to a level that held nothing within Recheck.
func (b *Backend) occupancy(ctx context.Context, q *qstate, fresh bool) ([]int, error) {
	at := q.occAt.Load()
	if fresh || at == 0 || time.Since(time.Unix(0, at)) >= b.opts.Recheck {
		q.occMu.Lock()
		defer q.occMu.Unlock()
		if q.occAt.Load() == at { // nobody read it while this call waited
			q.dirty.Store(0)
			cctx, cancel := b.callCtx(ctx)
			levels, _, err := b.levels(cctx, q)
			cancel()
			if err != nil {
				return nil, err
			}
			var set uint32
			for _, lvl := range levels {
				set |= 1 << lvl
			}
			q.occ.Store(set | q.dirty.Load())
			q.occAt.Store(time.Now().UnixNano())
		}
	}
	set := q.occ.Load()
	levels := make([]int, 0, bits.OnesCount32(set))
	for lvl := level(queue.MaxPriority); lvl >= 0; lvl-- {
		if set&(1<<lvl) != 0 {
			levels = append(levels, lvl)
		}
	}
	return levels, nil
}

// backoffPolicy paces the movers' retries after engine errors.
var backoffPolicy = backoff.Policy{Base: 50 * time.Millisecond, Max: 5 * time.Second}

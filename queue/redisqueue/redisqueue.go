package redisqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/queue"
)

// Defaults of Options.
const (
	// DefaultNamespace prefixes the keys of a backend without a Namespace.
	DefaultNamespace = "switchboard"
	// DefaultMaxDepth, DefaultMaxDead and DefaultMaxMessageSize are the
	// memory backend's bounds, so that code moving between them meets the
	// same limits.
	DefaultMaxDepth       = queue.DefaultMaxDepth
	DefaultMaxDead        = queue.DefaultMaxDead
	DefaultMaxMessageSize = queue.DefaultMaxMessageSize
	// DefaultDedupWindow is how long a DedupKey is remembered.
	DefaultDedupWindow = queue.DefaultDedupWindow
	// DefaultReconnectBase and DefaultReconnectMax bound the waits between
	// attempts to restore the wake-up subscription (full jitter).
	DefaultReconnectBase = 100 * time.Millisecond
	DefaultReconnectMax  = 5 * time.Second
)

// pingEvery is how long the wake-up subscription may stay silent before it
// is pinged; a second silence of that length means the connection is dead
// and it is replaced.
const pingEvery = 10 * time.Second

// redriveChunk bounds the dead letters one script call moves, so that
// redriving a large dead-letter queue never blocks Redis for long.
const redriveChunk = 1000

// Options configures New. The zero value gives every default.
type Options struct {
	// Namespace prefixes every key and channel of the backend: queue q
	// lives under "{ns}:q:<q>:". Backends that share a namespace share
	// its queues (that is how producers and workers on many machines
	// meet); backends in different namespaces share nothing. The braces
	// make the namespace the keys' hash tag, so all of them live on one
	// node. It may not contain '{' or '}'. Empty means DefaultNamespace.
	Namespace string
	// DedupWindow is how long a Message.DedupKey is remembered after the
	// first message that carried it (a key that expires in Redis). Zero
	// means DefaultDedupWindow (5m); at least a millisecond.
	DedupWindow time.Duration
	// MaxDepth bounds the messages of a queue: visible, delayed and in
	// flight together, dead letters apart. An Enqueue past it fails with
	// queue.ErrQueueFull and stores nothing; a Redrive past it moves what
	// fits and reports queue.ErrQueueFull. Zero means DefaultMaxDepth
	// (1,000,000).
	MaxDepth int
	// MaxDead bounds the dead letters of a queue. At the bound the oldest
	// is discarded and counted in Stats.DeadDropped. Zero means
	// DefaultMaxDead (100,000).
	MaxDead int
	// MaxMessageSize bounds len(Body) plus the bytes of the header's keys
	// and values; a larger message fails with queue.ErrTooLarge. Zero means
	// DefaultMaxMessageSize (256 KiB).
	MaxMessageSize int
	// ReconnectBase and ReconnectMax shape the waits between attempts to
	// restore the wake-up subscription after its connection was lost: a
	// random duration in [0, min(ReconnectMax, ReconnectBase*2^attempt)].
	// Zero means DefaultReconnectBase (100ms) and DefaultReconnectMax (5s).
	ReconnectBase, ReconnectMax time.Duration
}

// Backend is a queue.Backend on Redis Streams. See the package
// documentation for how it maps the contract onto Redis.
//
// All methods are safe for concurrent use.
type Backend struct {
	client *redis.Client // the caller's
	cfg    Options
	ns     string // "{ns}:q:"
	ids    ids.Generator
	acks   chan *ackReq  // to the ack batcher
	done   chan struct{} // closed by Close

	closed atomic.Bool

	mu       sync.Mutex
	ps       *redis.PubSub      // wake-up subscription; nil until the first wait; guarded by mu
	watches  map[string]*watch  // by wake channel; guarded by mu
	cancel   context.CancelFunc // ends the listener; guarded by mu
	listened chan struct{}      // closed when the listener returns; guarded by mu

	ctx     context.Context    // ended by Close: the batcher's calls
	stop    context.CancelFunc // ends ctx
	batched chan struct{}      // closed when the ack batcher returns
}

var _ queue.Backend = (*Backend)(nil)

// New returns a backend on the Redis that client talks to, ready to use.
// It talks to Redis only when called: New itself does no I/O. Close
// releases what the backend opened (its wake-up subscription and one
// goroutine); the client stays open and stays the caller's.
//
// Redis 7.0 or later is required (SET with NX and GET together). client may be a failover (Sentinel)
// client; a cluster client is not accepted, although every key of a
// namespace shares one hash slot.
func New(client *redis.Client, opts Options) (*Backend, error) {
	if client == nil {
		return nil, errors.New("redisqueue: nil client")
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if strings.ContainsAny(opts.Namespace, "{}") {
		return nil, fmt.Errorf("redisqueue: invalid namespace %q: no '{' or '}'", opts.Namespace)
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	opts.DedupWindow = max(opts.DedupWindow, time.Millisecond)
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	if opts.MaxDead <= 0 {
		opts.MaxDead = DefaultMaxDead
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.ReconnectBase <= 0 {
		opts.ReconnectBase = DefaultReconnectBase
	}
	if opts.ReconnectMax <= 0 {
		opts.ReconnectMax = DefaultReconnectMax
	}
	b := &Backend{
		client:  client,
		cfg:     opts,
		ns:      "{" + opts.Namespace + "}:q:",
		acks:    make(chan *ackReq, ackQueue),
		done:    make(chan struct{}),
		watches: make(map[string]*watch),
		batched: make(chan struct{}),
	}
	b.ctx, b.stop = context.WithCancel(context.Background())
	go b.batchAcks()
	return b, nil
}

// Close stops the backend: waiting Receives return queue.ErrClosed, as do
// later calls; it closes the wake-up subscription and waits for the
// backend's goroutines. Messages stay in Redis, leased ones until their
// lease passes. The client given to New stays open. Close is idempotent.
func (b *Backend) Close() error {
	b.mu.Lock() // so that no wait starts a subscription after this
	if b.closed.Swap(true) {
		b.mu.Unlock()
		return nil
	}
	ps, cancel, listened := b.ps, b.cancel, b.listened
	b.mu.Unlock()
	close(b.done)
	b.stop()
	<-b.batched
	if ps != nil {
		cancel()
		_ = ps.Close() // unblocks the listener's read
		<-listened
		b.mu.Lock()
		if b.ps != ps { // replaced by the listener meanwhile
			_ = b.ps.Close()
		}
		b.mu.Unlock()
	}
	return nil
}

// prefix returns the key prefix of the named queue.
func (b *Backend) prefix(name string) string { return b.ns + name }

func wakeChannel(p string) string { return p + ":wake" }

func metaKey(p string) []string { return []string{p + ":meta"} }

// ceilMillis converts d to whole milliseconds, rounding up: Redis keeps
// milliseconds, and a lease or a delay must never come out shorter.
func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (b *Backend) fail(op string, err error) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	return fmt.Errorf("redisqueue: %s: %w", op, err)
}

// Enqueue implements queue.Backend. The batch is stored by one script, so
// it is all or none; a duplicate DedupKey is reported with the id of the
// message that first carried it within the window.
func (b *Backend) Enqueue(ctx context.Context, name string, msgs []queue.Message) ([]queue.EnqueueResult, error) {
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	p := b.prefix(name)
	args := make([]any, 0, 4+6*len(msgs))
	args = append(args, p, wakeChannel(p), ceilMillis(b.cfg.DedupWindow), b.cfg.MaxDepth)
	now := time.Now()
	var idbuf [ids.Len]byte
	for i := range msgs {
		m := &msgs[i]
		size := len(m.Body)
		for k, v := range m.Header {
			size += len(k) + len(v)
		}
		if size > b.cfg.MaxMessageSize {
			return nil, fmt.Errorf("%w: %d bytes, limit %d", queue.ErrTooLarge, size, b.cfg.MaxMessageSize)
		}
		var runAt int64
		if !m.RunAt.IsZero() {
			runAt = max(m.RunAt.UnixMilli(), 0)
		}
		args = append(args, string(b.ids.AppendID(idbuf[:0], now)), strconv.Itoa(m.Priority),
			ceilMillis(m.Delay), runAt, m.DedupKey, pack(m))
	}
	res, err := enqueueScript.Run(ctx, b.client, metaKey(p), args...).Slice()
	if err != nil {
		return nil, b.fail("enqueue", err)
	}
	if len(res) == 1 {
		return nil, queue.ErrQueueFull
	}
	if len(res) != 2*len(msgs) {
		return nil, fmt.Errorf("redisqueue: enqueue: unexpected reply of %d values", len(res))
	}
	out := make([]queue.EnqueueResult, len(msgs))
	for i := range out {
		id, _ := res[2*i].(string)
		dup, _ := res[2*i+1].(int64)
		out[i] = queue.EnqueueResult{ID: id, Duplicate: dup == 1}
	}
	return out, nil
}

// Receive implements queue.Backend. One script moves due delayed messages
// into their streams and leases what is visible; when nothing is, the
// call waits for a wake-up published by whatever makes a message visible
// (or a timer to the next lease end or due delay, which the script
// reports), then runs the script again.
func (b *Backend) Receive(ctx context.Context, name string, opts queue.ReceiveOptions) ([]queue.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	p := b.prefix(name)
	deadline := time.Now().Add(opts.Wait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var wake <-chan struct{}
		if opts.Wait > 0 {
			var err error
			if wake, err = b.watch(ctx, wakeChannel(p)); err != nil {
				return nil, err
			}
		}
		ds, next, err := b.receive(ctx, p, opts)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, b.fail("receive", err)
		}
		if len(ds) > 0 {
			return ds, nil
		}
		left := time.Until(deadline)
		if opts.Wait <= 0 || left <= 0 {
			return nil, nil
		}
		if next >= 0 && next < left {
			left = next
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.done:
			return nil, queue.ErrClosed
		}
	}
}

// receive runs the receive script once. next is how long until something
// may become visible by time alone (-1: nothing will).
func (b *Backend) receive(ctx context.Context, p string, opts queue.ReceiveOptions) ([]queue.Delivery, time.Duration, error) {
	res, err := receiveScript.Run(ctx, b.client, metaKey(p), p, wakeChannel(p), opts.Max, ceilMillis(opts.Lease)).Slice()
	if err != nil {
		return nil, 0, err
	}
	status, _ := res[0].(int64)
	switch status {
	case -2: // paused: only Resume, which publishes, makes anything visible
		return nil, -1, nil
	case -1:
		wait, _ := res[1].(int64)
		if wait < 0 {
			return nil, -1, nil
		}
		return nil, time.Duration(wait+1) * time.Millisecond, nil
	}
	const per = 7
	ds := make([]queue.Delivery, 0, (len(res)-1)/per)
	for i := 1; i+per <= len(res); i += per {
		lv, _ := res[i].(string)
		sid, _ := res[i+1].(string)
		n, _ := res[i+2].(int64)
		id, _ := res[i+3].(string)
		t, _ := res[i+4].(string)
		packed, _ := res[i+5].(string)
		lastErr, _ := res[i+6].(string)
		level, _ := strconv.Atoi(lv)
		header, body, err := unpack(packed)
		if err != nil {
			return nil, 0, fmt.Errorf("%w (stream entry %s)", err, sid)
		}
		ms, _ := strconv.ParseInt(t, 10, 64)
		ds = append(ds, queue.Delivery{
			ID: id, Body: body, Header: header, Priority: level, Attempt: int(n),
			EnqueuedAt: time.UnixMilli(ms), LastError: lastErr,
			Receipt: queue.Receipt(receipt{level: level, sid: sid, n: int(n)}.String()),
		})
	}
	return ds, 0, nil
}

// settleOne runs a script that takes one receipt and returns 1, or 0 when
// the receipt is stale.
func (b *Backend) settleOne(ctx context.Context, op string, s *redis.Script, p string, args ...any) error {
	n, err := s.Run(ctx, b.client, metaKey(p), args...).Int64()
	if err != nil {
		return b.fail(op, err)
	}
	if n != 1 {
		return queue.ErrStaleReceipt
	}
	return nil
}

// Extend implements queue.Backend.
func (b *Backend) Extend(ctx context.Context, name string, r queue.Receipt, lease time.Duration) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	rc, err := parseReceipt(r)
	if err != nil {
		return err
	}
	p := b.prefix(name)
	return b.settleOne(ctx, "extend", extendScript, p, p, rc.level, rc.sid, rc.n, ceilMillis(lease))
}

// Nack implements queue.Backend.
func (b *Backend) Nack(ctx context.Context, name string, r queue.Receipt, delay time.Duration, lastErr string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	rc, err := parseReceipt(r)
	if err != nil {
		return err
	}
	p := b.prefix(name)
	return b.settleOne(ctx, "nack", nackScript, p, p, wakeChannel(p), rc.level, rc.sid, rc.n, ceilMillis(delay), lastErr)
}

// DeadLetter implements queue.Backend.
func (b *Backend) DeadLetter(ctx context.Context, name string, r queue.Receipt, lastErr string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	rc, err := parseReceipt(r)
	if err != nil {
		return err
	}
	p := b.prefix(name)
	return b.settleOne(ctx, "dead-letter", deadScript, p, p, rc.level, rc.sid, rc.n, lastErr, b.cfg.MaxDead)
}

// ListDead implements queue.Backend. Dead letters are listed in the order
// they died; the cursor is the dead-letter stream's entry id of the last
// one returned.
func (b *Backend) ListDead(ctx context.Context, name string, cursor string, limit int) ([]queue.DeadMessage, string, error) {
	if b.closed.Load() {
		return nil, "", queue.ErrClosed
	}
	start := "-"
	if cursor != "" {
		if !validStreamID(cursor) {
			return nil, "", &queue.InvalidError{Arg: "cursor", Reason: "not a cursor of this backend"}
		}
		start = "(" + cursor
	}
	xs, err := b.client.XRangeN(ctx, b.prefix(name)+":dead", start, "+", int64(limit)+1).Result()
	if err != nil {
		return nil, "", b.fail("list dead", err)
	}
	next := ""
	if len(xs) > limit {
		xs = xs[:limit]
		next = xs[limit-1].ID
	}
	out := make([]queue.DeadMessage, 0, len(xs))
	for _, x := range xs {
		str := func(k string) string { s, _ := x.Values[k].(string); return s }
		header, body, err := unpack(str("m"))
		if err != nil {
			return nil, "", fmt.Errorf("%w (dead-letter entry %s)", err, x.ID)
		}
		prio, _ := strconv.Atoi(str("p"))
		attempts, _ := strconv.Atoi(str("a"))
		ms, _ := strconv.ParseInt(str("t"), 10, 64)
		out = append(out, queue.DeadMessage{
			ID: str("i"), Body: body, Header: header, Priority: prio, Attempts: attempts,
			EnqueuedAt: time.UnixMilli(ms), DeadAt: time.UnixMilli(streamMillis(x.ID)), LastError: str("e"),
		})
	}
	return out, next, nil
}

// Redrive implements queue.Backend. Dead letters that would take the queue
// past MaxDepth stay dead; it then returns the count moved and
// queue.ErrQueueFull. Redriving every dead letter moves them a thousand
// per script call, so a large dead-letter queue never blocks Redis for
// long (and a concurrent dead-lettering may or may not be included).
func (b *Backend) Redrive(ctx context.Context, name string, ids []string) (int, error) {
	if b.closed.Load() {
		return 0, queue.ErrClosed
	}
	p := b.prefix(name)
	total := 0
	for first := true; first || len(ids) > 0; first = false {
		args := []any{p, wakeChannel(p), b.cfg.MaxDepth, redriveChunk}
		chunk := ids[:min(len(ids), redriveChunk)]
		ids = ids[len(chunk):]
		for _, id := range chunk {
			args = append(args, id)
		}
		res, err := redriveScript.Run(ctx, b.client, metaKey(p), args...).Int64Slice()
		if err != nil {
			return total, b.fail("redrive", err)
		}
		if len(res) != 2 {
			return total, fmt.Errorf("redisqueue: redrive: unexpected reply %v", res)
		}
		total += int(res[0])
		if res[1] == 1 {
			return total, queue.ErrQueueFull
		}
		if len(chunk) == 0 && res[0] == redriveChunk {
			first = true // redriving all: there may be more
		}
	}
	return total, nil
}

// Pause implements queue.Backend: a flag in the queue's meta hash that the
// receive script checks.
func (b *Backend) Pause(ctx context.Context, name string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	if err := b.client.HSet(ctx, b.prefix(name)+":meta", "paused", 1).Err(); err != nil {
		return b.fail("pause", err)
	}
	return nil
}

// Resume implements queue.Backend, and wakes the receivers waiting on
// every node.
func (b *Backend) Resume(ctx context.Context, name string) error {
	if b.closed.Load() {
		return queue.ErrClosed
	}
	p := b.prefix(name)
	_, err := b.client.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HDel(ctx, p+":meta", "paused")
		pipe.Publish(ctx, wakeChannel(p), "")
		return nil
	})
	if err != nil {
		return b.fail("resume", err)
	}
	return nil
}

// Stats implements queue.Backend, in one script, so the snapshot is
// consistent. OldestAge counts from when the oldest message entered its
// stream: its enqueue, its redrive, or the end of its delay.
func (b *Backend) Stats(ctx context.Context, name string) (queue.Stats, error) {
	if b.closed.Load() {
		return queue.Stats{}, queue.ErrClosed
	}
	p := b.prefix(name)
	v, err := statsScript.Run(ctx, b.client, metaKey(p), p).Int64Slice()
	if err != nil {
		return queue.Stats{}, b.fail("stats", err)
	}
	if len(v) != 11 {
		return queue.Stats{}, fmt.Errorf("redisqueue: stats: unexpected reply %v", v)
	}
	s := queue.Stats{
		Depth: int(v[0]), InFlight: int(v[1]), Delayed: int(v[2]), Dead: int(v[3]),
		Processed: uint64(v[4]), Failed: uint64(v[5]), Retried: uint64(v[6]), DeadDropped: uint64(v[7]),
		Paused: v[10] == 1,
	}
	if v[8] >= 0 {
		s.OldestAge = max(time.Duration(v[9]-v[8])*time.Millisecond, 0)
	}
	return s, nil
}

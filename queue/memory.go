package queue

import (
	"container/heap"
	"context"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/switchboard-go/switchboard/internal/batch"
	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/ids"
)

// Defaults and bounds of the memory backend.
const (
	DefaultDedupWindow    = 5 * time.Minute
	DefaultMaxDepth       = 1_000_000
	DefaultMaxDead        = 100_000
	DefaultMaxQueues      = 10_000
	DefaultMaxMessageSize = 256 << 10
	DefaultMaxDedupKeys   = 1_000_000
)

// MemoryOptions configures NewMemory. The zero value gives every default.
type MemoryOptions struct {
	// Clock drives leases, delays, waits and the deduplication window.
	// Nil means the real clock.
	Clock clock.Clock
	// DedupWindow is how long a DedupKey is remembered after the first
	// message that carried it. Zero means DefaultDedupWindow (5m).
	DedupWindow time.Duration
	// MaxDedupKeys bounds the keys remembered per queue; at the bound the
	// oldest key is forgotten before its window ends. Zero means
	// DefaultMaxDedupKeys (1,000,000).
	MaxDedupKeys int
	// MaxDepth bounds the messages of a queue, visible, delayed and in
	// flight together (dead letters apart). An Enqueue past it fails with
	// ErrQueueFull and stores nothing. Zero means DefaultMaxDepth
	// (1,000,000).
	MaxDepth int
	// MaxDead bounds the dead letters of a queue. At the bound the oldest
	// dead letter is discarded and counted in Stats.DeadDropped. Zero
	// means DefaultMaxDead (100,000).
	MaxDead int
	// MaxQueues bounds how many queues the backend holds; using one more
	// fails with ErrTooManyQueues. Zero means DefaultMaxQueues (10,000).
	MaxQueues int
	// MaxMessageSize bounds len(Body) plus the bytes of the header's keys
	// and values; a larger message fails with ErrTooLarge. Zero means
	// DefaultMaxMessageSize (256 KiB).
	MaxMessageSize int
}

// Memory is the in-memory Backend: a real implementation for one process,
// and what every test runs on. It keeps nothing across a restart: messages
// not yet acked when the process ends are lost. When work must survive a
// restart or be shared between machines, use a durable backend (pgqueue,
// redisqueue, natsqueue) through the same Backend interface.
//
// Each queue keeps its messages in a slot table, and a receipt names the
// slot and the lease's token, so that Ack, Nack, Extend and DeadLetter find
// their message without a lookup by id. Visible messages wait in one
// first-in-first-out ring per priority, where an enqueue appends and a
// receive takes from the highest non-empty priority, both in O(1); a
// message that becomes visible again (nacked, its lease passed, its delay
// due) keeps its place in line, so it waits in a heap ordered by priority
// then enqueue order, and a receive takes the better of the two heads.
// Leases wait in a ring in the order they end, since leases taken later
// with the same duration end later: a receive records its batch's leases
// and an ack drops one in O(1) (an ended record is skipped when it reaches
// the head). Delayed messages, extended leases and any lease that ends
// before the last one recorded wait in a heap ordered by when they become
// visible. A receive checks both first. Waiting receivers sleep on their
// own channel and are woken first come first, as many as the messages made
// visible need (each counts for its Max); one timer per queue, armed only
// while receivers wait, wakes them when a delay or a lease ends.
//
// Memory a queue keeps beyond its messages: the slot table grows to the
// queue's largest depth (16 bytes a slot) and is given back when the queue
// empties; up to 1024 entries of acked messages (about 200 KiB) are kept
// for the next enqueues to reuse (more go to a sync.Pool); the rings shrink as they drain, and the lease ring is compacted
// when ended records make it more than twice the leases held plus 1024.
// An enqueue fills in its messages' entries (and makes their ids) before
// it takes the queue's lock to place them, so that consumers wait on a
// producer only for the placing; AckBatch and ReceiveAppend let a consumer
// pay one lock and no slice per batch.
// Acks on the wall clock check the lease against the monotonic clock
// alone, which costs half a full reading.
//
// All methods are safe for concurrent use.
type Memory struct {
	cfg   MemoryOptions
	clock clock.Clock
	// real is set when clock is the wall clock: a lease is then checked
	// against the monotonic clock alone (time.Until), half the cost of Now.
	real bool
	ids  ids.Generator
	done chan struct{} // closed by Close
	// entries recycles the entries of acked messages past a queue's
	// maxSpare, which nothing references once acked.
	entries sync.Pool
	// token is the last lease token handed out. Tokens are unique across
	// the backend's queues, and start at random so that a receipt of an
	// earlier backend (before a restart) does not hold a message of this one.
	token atomic.Uint64

	closed atomic.Bool // set once, under mu
	queues sync.Map    // name → *memQueue; stored under mu
	// last is the queue used last, found without hashing its name by the
	// calls that follow on the same queue (the common case).
	last atomic.Pointer[memQueue]

	mu      sync.Mutex
	nqueues int // guarded by mu
}

var _ Backend = (*Memory)(nil)

// NewMemory returns a ready memory backend. Close it when done.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.MaxDedupKeys <= 0 {
		opts.MaxDedupKeys = DefaultMaxDedupKeys
	}
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	if opts.MaxDead <= 0 {
		opts.MaxDead = DefaultMaxDead
	}
	if opts.MaxQueues <= 0 {
		opts.MaxQueues = DefaultMaxQueues
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	m := &Memory{
		cfg:   opts,
		clock: clock.Or(opts.Clock),
		done:  make(chan struct{}),
	}
	_, m.real = m.clock.(clock.Real)
	m.token.Store(rand.Uint64())
	return m
}

// Close ends every waiting Receive with ErrClosed and makes every later
// call fail with ErrClosed. The messages are gone.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed.Load() {
		m.mu.Unlock()
		return nil
	}
	m.closed.Store(true)
	close(m.done)
	m.mu.Unlock()
	m.queues.Range(func(_, v any) bool {
		q := v.(*memQueue)
		q.mu.Lock()
		q.closed = true
		if q.timer != nil {
			q.timer.Stop()
		}
		q.mu.Unlock()
		return true
	})
	return nil
}

// queue returns the named queue, creating it on first use.
func (m *Memory) queue(name string) (*memQueue, error) {
	if m.closed.Load() {
		return nil, ErrClosed
	}
	if q := m.last.Load(); q != nil && q.name == name {
		return q, nil
	}
	if v, ok := m.queues.Load(name); ok {
		q := v.(*memQueue)
		m.last.Store(q)
		return q, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Load() {
		return nil, ErrClosed
	}
	if v, ok := m.queues.Load(name); ok {
		return v.(*memQueue), nil
	}
	if m.nqueues >= m.cfg.MaxQueues {
		return nil, ErrTooManyQueues
	}
	q := &memQueue{m: m, name: name, deadByID: make(map[string]*entry), dedup: make(map[string]dedupRec)}
	m.queues.Store(name, q)
	m.nqueues++
	return q, nil
}

// Entry states.
const (
	stateReady uint8 = iota
	stateDelayed
	stateLeased
	stateDead
	stateGone
)

// entry is one message. Its fields are guarded by the mutex of its queue.
type entry struct {
	id         string
	body       []byte
	header     map[string]string
	priority   int
	seq        uint64    // enqueue (or redrive) order within the queue
	enqueuedAt time.Time // first enqueue
	queuedAt   time.Time // enqueue or redrive, for Stats.OldestAge
	attempts   int
	lastErr    string
	state      uint8
	at         time.Time // delayed or leased: when it becomes visible
	token      uint64    // the lease's token; part of the receipt
	slot       int       // position in the slot table while ready, delayed or leased
	index      int       // position in the later or timed heap
	inRing     bool      // leased, its lease recorded in the queue's lease ring
	deadSeq    uint64
	deadAt     time.Time
}

type dedupRec struct {
	id      string
	expires time.Time
}

// maxSpare bounds the entries a queue keeps for reuse (about 200 bytes
// each): past it, the entry of an acked message goes to the backend's
// sync.Pool, which the collector may empty.
const maxSpare = 1024

// levels is the number of priorities, each with its own ring.
const levels = MaxPriority - MinPriority + 1

// fifoRec is an entry's place in enqueue order: the entry in slot, if its
// seq is still seq (otherwise the entry left the queue).
type fifoRec struct {
	slot int
	seq  uint64
}

type memQueue struct {
	m    *Memory
	name string

	mu     sync.Mutex
	closed bool   // guarded by mu
	paused bool   // guarded by mu
	seq    uint64 // guarded by mu

	// slots holds the ready, delayed and leased entries, each at its slot;
	// free lists the empty slots below len(slots). Guarded by mu.
	slots []*entry
	free  []int
	live  int // entries in slots; guarded by mu
	// spare holds, for reuse by Enqueue, up to maxSpare entries of acked
	// messages, which nothing references once acked. Guarded by mu.
	spare []*entry

	// Visible messages: fresh[p] holds, in enqueue order, those of priority
	// MinPriority+p never made visible again; later holds the rest. bits
	// has bit p set while fresh[p] is not empty. Guarded by mu.
	fresh   [levels]ring[*entry]
	bits    uint32
	later   laterHeap
	visible int // in fresh and later; guarded by mu

	timed timedHeap // delayed, and leased outside the lease ring; guarded by mu
	// leases holds, in the order they end, the leases that ended no
	// earlier than the one recorded before them (those of one receive,
	// and of receives with the same lease, in practice all of them), plus
	// ended records not yet skipped; its head is always a live record.
	// ringLive counts the live ones, leaseTail is when the last recorded
	// one ends. Guarded by mu.
	leases    ring[leaseRec]
	ringLive  int
	leaseTail time.Time
	leased    int               // guarded by mu
	fifo      ring[fifoRec]     // live entries in queuedAt order, plus departed ones not yet skipped; guarded by mu
	dead      []*entry          // in deadSeq order; guarded by mu
	deadByID  map[string]*entry // guarded by mu
	deadSeq   uint64            // guarded by mu
	dedup     map[string]dedupRec
	dedupQ    []dedupKey // keys in expiry order (the window is fixed); guarded by mu
	waiters   []*waiter  // receivers waiting, first come first woken; guarded by mu
	timer     clock.Timer
	timerAt   time.Time // when timer fires; zero when disarmed; guarded by mu

	processed, failed, retried, deadDropped uint64 // guarded by mu
}

// leaseRec is a lease in the lease ring: the entry in slot, if it is
// still leased with token and recorded in the ring.
type leaseRec struct {
	slot  int
	token uint64
}

type dedupKey struct {
	key     string
	expires time.Time
}

// waiter is one Receive waiting for up to max messages. ch (buffered 1)
// gets a value when the waiter is woken; a woken waiter has been removed
// from the list.
type waiter struct {
	ch  chan struct{}
	max int
}

func messageSize(msg Message) int {
	n := len(msg.Body)
	for k, v := range msg.Header {
		n += len(k) + len(v)
	}
	return n
}

// Enqueue implements Backend.
func (m *Memory) Enqueue(_ context.Context, name string, msgs []Message) ([]EnqueueResult, error) {
	for _, msg := range msgs {
		if messageSize(msg) > m.cfg.MaxMessageSize {
			return nil, ErrTooLarge
		}
	}
	q, err := m.queue(name)
	if err != nil {
		return nil, err
	}
	// What needs no lock is done before it is taken: the time, the ids of
	// the whole batch (one string sliced per message) and the entries,
	// filled in. The queue's lock is then taken briefly for the entries,
	// and held only to place them.
	now := m.clock.Now()
	res := make([]EnqueueResult, len(msgs))
	idb := m.ids.AppendIDs(make([]byte, 0, ids.Len*len(msgs)), now, len(msgs))
	all := unsafe.String(unsafe.SliceData(idb), len(idb)) // idb is never written again
	var buf [128]*entry
	es := buf[:0]
	if len(msgs) > len(buf) {
		es = make([]*entry, 0, len(msgs))
	}
	q.mu.Lock()
	for range msgs {
		es = append(es, q.newEntry())
	}
	q.mu.Unlock()
	for i, msg := range msgs {
		e := es[i]
		e.id, e.body, e.header, e.priority = all[i*ids.Len:(i+1)*ids.Len], msg.Body, msg.Header, msg.Priority
		e.enqueuedAt, e.queuedAt = now, now
		at := msg.RunAt
		if msg.Delay > 0 {
			at = now.Add(msg.Delay)
		}
		if at.After(now) {
			e.state, e.at = stateDelayed, at
		} else {
			e.state = stateReady
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		q.unused(es)
		return nil, ErrClosed
	}
	q.expireDedup(now)
	if q.live+len(msgs) > m.cfg.MaxDepth {
		q.unused(es)
		return nil, ErrQueueFull
	}
	var batchKeys map[string]string // dedup keys first seen in this batch
	woken := 0
	for i, msg := range msgs {
		e := es[i]
		if msg.DedupKey != "" {
			if rec, ok := q.dedup[msg.DedupKey]; ok {
				res[i] = EnqueueResult{ID: rec.id, Duplicate: true}
				q.unused(es[i : i+1])
				continue
			}
			if first, ok := batchKeys[msg.DedupKey]; ok {
				res[i] = EnqueueResult{ID: first, Duplicate: true}
				q.unused(es[i : i+1])
				continue
			}
			if batchKeys == nil {
				batchKeys = make(map[string]string)
			}
			batchKeys[msg.DedupKey] = e.id
		}
		res[i] = EnqueueResult{ID: e.id}
		q.seq++
		e.seq = q.seq
		q.place(e)
		if e.state == stateDelayed {
			q.timed.push(e)
		} else {
			q.pushFresh(e)
			woken++
		}
	}
	for key, id := range batchKeys {
		q.rememberKey(key, id, now)
	}
	q.wake(woken)
	q.armTimer(now)
	return res, nil
}

// unused gives back entries that Enqueue filled and did not place. q.mu
// is held.
func (q *memQueue) unused(es []*entry) {
	for _, e := range es {
		e.id, e.body, e.header = "", nil, nil
		if len(q.spare) < maxSpare {
			q.spare = append(q.spare, e)
		}
	}
}

// newEntry returns a spare entry, or a new one. The fields a message
// carries from one state to the next (attempts, lastErr, token, inRing)
// are reset; the caller sets the message's own and its state; the rest
// are set by the state that uses them. q.mu is held.
func (q *memQueue) newEntry() *entry {
	n := len(q.spare)
	if n == 0 {
		if e, _ := q.m.entries.Get().(*entry); e != nil {
			return e // zeroed when put
		}
		return new(entry)
	}
	e := q.spare[n-1]
	q.spare[n-1] = nil
	q.spare = q.spare[:n-1]
	e.attempts, e.lastErr, e.token, e.inRing = 0, "", 0, false
	return e
}

// place puts e, with its seq set, in a free slot. q.mu is held.
func (q *memQueue) place(e *entry) {
	if n := len(q.free); n > 0 {
		e.slot = q.free[n-1]
		q.free = q.free[:n-1]
	} else {
		e.slot = len(q.slots)
		q.slots = append(q.slots, nil)
	}
	q.slots[e.slot] = e
	q.live++
	q.fifo.push(fifoRec{slot: e.slot, seq: e.seq})
}

// forget drops a message that left the queue (acked or dead) from the slot
// table. q.mu is held.
func (q *memQueue) forget(e *entry) {
	q.slots[e.slot] = nil
	e.state = stateGone
	q.live--
	if q.live == 0 {
		// Empty: every slot and every fifo record is free. Start afresh,
		// giving back a table that grew large. Receipts of the old slots
		// stay stale: their tokens are never handed out again.
		if cap(q.slots) > 4096 {
			q.slots, q.free = nil, nil
		} else {
			q.slots, q.free = q.slots[:0], q.free[:0]
		}
		q.fifo.clear()
		q.leases.clear()
		return
	}
	q.free = append(q.free, e.slot)
	// Skip departed entries at the head of fifo; compact when departed
	// ones elsewhere make it more than twice the live count.
	for q.fifo.len() > 0 && !q.isLive(q.fifo.peek()) {
		q.fifo.pop()
	}
	if q.fifo.len() > 2*q.live+1024 {
		var kept ring[fifoRec]
		for i := range q.fifo.len() {
			if r := q.fifo.at(i); q.isLive(r) {
				kept.push(r)
			}
		}
		q.fifo = kept
	}
}

func (q *memQueue) isLive(r fifoRec) bool {
	return r.slot < len(q.slots) && q.slots[r.slot] != nil && q.slots[r.slot].seq == r.seq
}

// pushFresh makes visible an entry whose seq is the queue's newest. q.mu is
// held.
func (q *memQueue) pushFresh(e *entry) {
	if p := e.priority - MinPriority; 0 <= p && p < levels {
		q.fresh[p].push(e)
		q.bits |= 1 << p
	} else { // out of the documented range: only a direct backend call sends one
		heap.Push(&q.later, e)
	}
	q.visible++
}

// pushLater makes an entry visible again, in its place in line. q.mu is
// held.
func (q *memQueue) pushLater(e *entry) {
	e.state = stateReady
	heap.Push(&q.later, e)
	q.visible++
}

// popVisible takes the first visible entry: highest priority, then lowest
// seq. q.visible > 0 and q.mu is held.
func (q *memQueue) popVisible() *entry {
	var e *entry
	p := -1
	if q.bits != 0 {
		p = bits.Len32(q.bits) - 1
		e = q.fresh[p].peek()
	}
	q.visible--
	if len(q.later) > 0 && (e == nil || visibleBefore(q.later[0], e)) {
		return heap.Pop(&q.later).(*entry)
	}
	q.fresh[p].pop()
	if q.fresh[p].len() == 0 {
		q.bits &^= 1 << p
	}
	return e
}

func (q *memQueue) rememberKey(key, id string, now time.Time) {
	exp := now.Add(q.m.cfg.DedupWindow)
	if len(q.dedup) >= q.m.cfg.MaxDedupKeys && len(q.dedupQ) > 0 {
		old := q.dedupQ[0]
		q.dedupQ = q.dedupQ[1:]
		delete(q.dedup, old.key)
	}
	q.dedup[key] = dedupRec{id: id, expires: exp}
	q.dedupQ = append(q.dedupQ, dedupKey{key, exp})
}

func (q *memQueue) expireDedup(now time.Time) {
	n := 0
	for n < len(q.dedupQ) && !q.dedupQ[n].expires.After(now) {
		k := q.dedupQ[n]
		if rec, ok := q.dedup[k.key]; ok && rec.expires.Equal(k.expires) {
			delete(q.dedup, k.key)
		}
		n++
	}
	if n > 0 {
		q.dedupQ = append(q.dedupQ[:0], q.dedupQ[n:]...)
	}
}

// promote makes visible every delayed or leased message that is due.
func (q *memQueue) promote(now time.Time) int {
	n := 0
	for {
		var e *entry
		switch {
		case len(q.timed) > 0 && !q.timed[0].at.After(now):
			e = q.timed.pop()
		case q.leases.len() > 0 && !q.slots[q.leases.peek().slot].at.After(now):
			e = q.slots[q.leases.pop().slot]
			e.inRing = false
			q.ringLive--
			q.skipLeases()
		default:
			return n
		}
		if e.state == stateLeased {
			q.leased--
		}
		q.pushLater(e)
		n++
	}
}

// pushLease records the lease of e, leased until e.at: in the lease ring
// when it ends no earlier than the last one recorded there (O(1)),
// otherwise in the timed heap. q.mu is held.
func (q *memQueue) pushLease(e *entry) {
	if q.leases.len() > 0 && e.at.Before(q.leaseTail) {
		q.timed.push(e)
		return
	}
	q.leases.push(leaseRec{slot: e.slot, token: e.token})
	e.inRing = true
	q.ringLive++
	q.leaseTail = e.at
}

// unlease takes the lease of e, leased, out of the ring or the heap that
// holds it. q.mu is held.
func (q *memQueue) unlease(e *entry) {
	if !e.inRing {
		q.timed.remove(e.index)
		return
	}
	e.inRing = false
	q.ringLive--
	q.skipLeases()
}

func (q *memQueue) isLiveLease(r leaseRec) bool {
	if r.slot >= len(q.slots) {
		return false
	}
	e := q.slots[r.slot]
	return e != nil && e.inRing && e.token == r.token && e.state == stateLeased
}

// skipLeases drops ended records at the head of the lease ring, and
// compacts it when ended records elsewhere make it more than twice the
// live count, so that it stays bounded by the leases held. q.mu is held.
func (q *memQueue) skipLeases() {
	for q.leases.len() > 0 && !q.isLiveLease(q.leases.peek()) {
		q.leases.pop()
	}
	if q.leases.len() > 2*q.ringLive+1024 {
		var kept ring[leaseRec]
		for i := range q.leases.len() {
			if r := q.leases.at(i); q.isLiveLease(r) {
				kept.push(r)
			}
		}
		q.leases = kept
	}
}

// nextDue returns when the next delayed or leased message becomes
// visible; ok is false when there is none. q.mu is held.
func (q *memQueue) nextDue() (at time.Time, ok bool) {
	if len(q.timed) > 0 {
		at, ok = q.timed[0].at, true
	}
	if q.leases.len() > 0 {
		if r := q.slots[q.leases.peek().slot].at; !ok || r.Before(at) {
			at, ok = r, true
		}
	}
	return at, ok
}

// wake wakes waiting receivers, first come first, for n messages made
// visible: as many as take n between them (a receiver counts for its Max),
// so that a batch does not wake every receiver to find most of them
// nothing. A woken receiver that leaves messages visible wakes the next.
func (q *memQueue) wake(n int) {
	for n > 0 && len(q.waiters) > 0 {
		w := q.waiters[0]
		q.waiters[0] = nil
		q.waiters = q.waiters[1:]
		w.ch <- struct{}{}
		n -= w.max
	}
}

// armTimer makes sure that, while receivers wait, the queue's timer fires
// when the next delayed or leased message becomes visible.
func (q *memQueue) armTimer(now time.Time) {
	if len(q.waiters) == 0 || q.closed {
		return
	}
	at, ok := q.nextDue()
	if !ok {
		return
	}
	if !q.timerAt.IsZero() && !at.Before(q.timerAt) {
		return
	}
	q.timerAt = at
	if q.timer == nil {
		q.timer = q.m.clock.AfterFunc(at.Sub(now), q.onTimer)
	} else {
		q.timer.Reset(at.Sub(now))
	}
}

func (q *memQueue) onTimer() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.timerAt = time.Time{}
	now := q.m.clock.Now()
	q.promote(now)
	if !q.paused {
		q.wake(q.visible)
	}
	q.armTimer(now)
}

func (q *memQueue) removeWaiter(w *waiter) bool {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// Receive implements Backend.
func (m *Memory) Receive(ctx context.Context, name string, opts ReceiveOptions) ([]Delivery, error) {
	return m.ReceiveAppend(ctx, name, nil, opts)
}

// ReceiveAppend implements ReceiveAppender: Receive, appending to dst.
func (m *Memory) ReceiveAppend(ctx context.Context, name string, dst []Delivery, opts ReceiveOptions) ([]Delivery, error) {
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	q, err := m.queue(name)
	if err != nil {
		return dst, err
	}
	var (
		deadline time.Time
		t        clock.Timer
		w        *waiter
	)
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return dst, ErrClosed
		}
		now := m.clock.Now()
		q.promote(now)
		if !q.paused && q.visible > 0 {
			dst = q.take(dst, now, opts)
			if q.visible > 0 {
				q.wake(q.visible)
			}
			q.armTimer(now)
			q.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return dst, nil
		}
		if deadline.IsZero() {
			deadline = now.Add(opts.Wait)
		}
		if !now.Before(deadline) {
			q.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return dst, nil
		}
		if w == nil {
			w = &waiter{ch: make(chan struct{}, 1), max: max(opts.Max, 1)}
		}
		q.waiters = append(q.waiters, w)
		q.armTimer(now)
		q.mu.Unlock()
		if t == nil {
			t = m.clock.NewTimer(deadline.Sub(now))
		}
		var stop error
		select {
		case <-w.ch:
			continue
		case <-t.C():
			t = nil // fired: the next round sees the deadline passed
			continue
		case <-ctx.Done():
			stop = ctx.Err()
		case <-m.done:
			stop = ErrClosed
		}
		q.mu.Lock()
		if !q.removeWaiter(w) {
			// Woken as we left: hand the wake-up on, so that no visible
			// message is left with a receiver asleep.
			<-w.ch
			if !q.paused {
				q.wake(q.visible)
			}
		}
		q.mu.Unlock()
		if t != nil {
			t.Stop()
		}
		return dst, stop
	}
}

// take leases up to opts.Max visible messages, appending them to dst.
// q.mu is held.
func (q *memQueue) take(dst []Delivery, now time.Time, opts ReceiveOptions) []Delivery {
	n := min(opts.Max, q.visible)
	dst = slices.Grow(dst, n)
	until := now.Add(opts.Lease)
	// This batch's tokens are first+1 .. first+n; its receipts are one
	// string, sliced per delivery.
	first := q.m.token.Add(uint64(n)) - uint64(n)
	rb := make([]byte, 0, receiptLen*n)
	start := len(dst)
	for i := range n {
		e := q.popVisible()
		e.attempts++
		if e.attempts > 1 {
			q.retried++
		}
		e.token = first + uint64(i) + 1
		e.state, e.at = stateLeased, until
		q.leased++
		q.pushLease(e)
		rb = appendReceipt(rb, e.token, e.slot)
		dst = append(dst, Delivery{
			ID: e.id, Body: e.body, Header: e.header, Priority: e.priority,
			Attempt: e.attempts, EnqueuedAt: e.enqueuedAt, LastError: e.lastErr,
		})
	}
	all := unsafe.String(unsafe.SliceData(rb), len(rb)) // rb is never written again
	for i := range n {
		dst[start+i].Receipt = Receipt(all[i*receiptLen : (i+1)*receiptLen])
	}
	return dst
}

// A memory receipt is "<token>.<slot>", both in base 32, written with 13
// and 7 digits so that every receipt has the same length: the slot finds
// the entry; the token, unique across the backend and never handed out
// twice, proves that the lease is the current one.
const (
	tokenDigits = 13 // 5*13 bits > 64
	slotDigits  = 7  // 2^35 slots
	receiptLen  = tokenDigits + 1 + slotDigits
)

const base32 = "0123456789abcdefghijklmnopqrstuv" // strconv's digits for base 32

func appendReceipt(b []byte, token uint64, slot int) []byte {
	var buf [receiptLen]byte
	for i := tokenDigits - 1; i >= 0; i-- {
		buf[i] = base32[token&31]
		token >>= 5
	}
	buf[tokenDigits] = '.'
	s := uint64(slot)
	for i := receiptLen - 1; i > tokenDigits; i-- {
		buf[i] = base32[s&31]
		s >>= 5
	}
	return append(b, buf[:]...)
}

// parseReceipt reads a receipt: digits of any width in base 32, either
// case, so that a receipt stays readable if the widths ever change. A slot
// that does not parse names no slot (-1): the receipt is stale.
func parseReceipt(r Receipt) (token uint64, slot int, err error) {
	if len(r) == receiptLen && r[tokenDigits] == '.' {
		// The width this backend writes: no search, no branch a digit.
		// A bad digit sets bit 7; 13 digits hold 65 bits, so the first
		// must be below 16.
		var bad byte
		var s uint64
		for i := range tokenDigits {
			d := base32Value[r[i]]
			bad |= d
			token = token<<5 | uint64(d&31)
		}
		for i := tokenDigits + 1; i < receiptLen; i++ {
			d := base32Value[r[i]]
			bad |= d
			s = s<<5 | uint64(d&31)
		}
		if bad&0x80 == 0 && base32Value[r[0]] < 16 {
			return token, int(s), nil
		}
	}
	tok, s, ok := strings.Cut(string(r), ".")
	token, tokOK := parseBase32(tok)
	if !ok || s == "" || !tokOK {
		return 0, 0, invalid("receipt", "not a receipt of this backend")
	}
	n, ok := parseBase32(s)
	if !ok || n > 1<<40 {
		return token, -1, nil
	}
	return token, int(n), nil
}

// base32Value maps a byte to its base-32 digit, either case, or 0xFF.
var base32Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	for i := range len(base32) {
		t[base32[i]] = byte(i)
		if c := base32[i]; 'a' <= c {
			t[c-'a'+'A'] = byte(i)
		}
	}
	return t
}()

// parseBase32 reads 1 to 13 base-32 digits of a value below 2^64.
func parseBase32(s string) (uint64, bool) {
	if s == "" || len(s) > tokenDigits {
		return 0, false
	}
	var v uint64
	for i := range len(s) {
		d := base32Value[s[i]]
		if d == 0xFF || v>>59 != 0 {
			return 0, false
		}
		v = v<<5 | uint64(d)
	}
	return v, true
}

// leased finds the entry a receipt holds, with q.mu held, or fails with
// ErrStaleReceipt. It returns the clock's time when wantNow, else the zero
// time.
func (m *Memory) leased(name string, r Receipt, wantNow bool) (*memQueue, *entry, time.Time, error) {
	token, slot, err := parseReceipt(r)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	q, err := m.queue(name)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, nil, time.Time{}, ErrClosed
	}
	var e *entry
	if 0 <= slot && slot < len(q.slots) {
		e = q.slots[slot]
	}
	var now time.Time
	if e == nil || e.state != stateLeased || e.token != token || m.leaseEnded(e.at, wantNow, &now) {
		q.mu.Unlock()
		return nil, nil, time.Time{}, ErrStaleReceipt
	}
	return q, e, now, nil
}

// leaseEnded reports whether a lease until at has ended, setting *now to
// the clock's time when wantNow (or when the clock is not the wall clock).
func (m *Memory) leaseEnded(at time.Time, wantNow bool, now *time.Time) bool {
	if m.real && !wantNow {
		return time.Until(at) <= 0
	}
	*now = m.clock.Now()
	return !now.Before(at)
}

// Extend implements Backend.
func (m *Memory) Extend(_ context.Context, name string, r Receipt, lease time.Duration) error {
	q, e, now, err := m.leased(name, r, true)
	if err != nil {
		return err
	}
	q.unlease(e)
	e.at = now.Add(lease)
	q.timed.push(e)
	q.mu.Unlock()
	return nil
}

// Ack implements Backend.
func (m *Memory) Ack(_ context.Context, name string, r Receipt) error {
	q, e, _, err := m.leased(name, r, false)
	if err != nil {
		return err
	}
	q.ack(e)
	q.mu.Unlock()
	return nil
}

// AckBatch implements BatchAcker: the receipts are read before the lock is
// taken, and the lock and the clock are taken once for the batch.
func (m *Memory) AckBatch(_ context.Context, name string, rs []Receipt) []error {
	errs := batch.New(len(rs))
	failAll := func(err error) []error {
		for i := range rs {
			errs.Fail(i, err)
		}
		return errs.List()
	}
	q, err := m.queue(name)
	if err != nil {
		return failAll(err)
	}
	type ref struct {
		token uint64
		slot  int
	}
	var buf [64]ref
	refs := buf[:0]
	if len(rs) > len(buf) {
		refs = make([]ref, 0, len(rs))
	}
	for i, r := range rs {
		token, slot, err := parseReceipt(r)
		if err != nil {
			errs.Fail(i, err)
			slot = -1
		}
		refs = append(refs, ref{token, slot})
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return failAll(ErrClosed)
	}
	now := m.clock.Now()
	for i, r := range refs {
		if errs.Failed(i) {
			continue
		}
		var e *entry
		if 0 <= r.slot && r.slot < len(q.slots) {
			e = q.slots[r.slot]
		}
		if e == nil || e.state != stateLeased || e.token != r.token || !now.Before(e.at) {
			errs.Fail(i, ErrStaleReceipt)
			continue
		}
		q.ack(e)
	}
	return errs.List()
}

// ack deletes e, leased: the message was processed. q.mu is held.
func (q *memQueue) ack(e *entry) {
	q.unlease(e)
	q.leased--
	q.processed++
	q.forget(e)
	if len(q.spare) < maxSpare {
		e.id, e.body, e.header, e.lastErr = "", nil, nil, "" // let go of the message
		q.spare = append(q.spare, e)
		return
	}
	*e = entry{}
	q.m.entries.Put(e)
}

// Nack implements Backend.
func (m *Memory) Nack(_ context.Context, name string, r Receipt, delay time.Duration, lastErr string) error {
	q, e, now, err := m.leased(name, r, true)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	q.failed++
	q.leased--
	q.unlease(e)
	e.lastErr = lastErr
	e.token = 0
	if delay <= 0 {
		q.pushLater(e)
		if !q.paused {
			q.wake(1)
		}
		return nil
	}
	e.state, e.at = stateDelayed, now.Add(delay)
	q.timed.push(e)
	q.armTimer(now)
	return nil
}

// DeadLetter implements Backend.
func (m *Memory) DeadLetter(_ context.Context, name string, r Receipt, lastErr string) error {
	q, e, now, err := m.leased(name, r, true)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	q.failed++
	q.leased--
	q.unlease(e)
	q.forget(e)
	e.state = stateDead
	e.lastErr = lastErr
	e.deadAt = now
	q.deadSeq++
	e.deadSeq = q.deadSeq
	if len(q.dead) >= m.cfg.MaxDead {
		old := q.dead[0]
		q.dead[0] = nil
		q.dead = q.dead[1:]
		delete(q.deadByID, old.id)
		q.deadDropped++
	}
	q.dead = append(q.dead, e)
	q.deadByID[e.id] = e
	return nil
}

// ListDead implements Backend. Its cursor is the position of the last dead
// letter returned, in decimal.
func (m *Memory) ListDead(_ context.Context, name string, cursor string, limit int) ([]DeadMessage, string, error) {
	var after uint64
	if cursor != "" {
		n, err := strconv.ParseUint(cursor, 10, 64)
		if err != nil {
			return nil, "", invalid("cursor", "not a cursor of this backend")
		}
		after = n
	}
	q, err := m.queue(name)
	if err != nil {
		return nil, "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, "", ErrClosed
	}
	i := sort.Search(len(q.dead), func(i int) bool { return q.dead[i].deadSeq > after })
	j := min(i+limit, len(q.dead))
	out := make([]DeadMessage, 0, j-i)
	for _, e := range q.dead[i:j] {
		out = append(out, DeadMessage{
			ID: e.id, Body: e.body, Header: e.header, Priority: e.priority, Attempts: e.attempts,
			EnqueuedAt: e.enqueuedAt, DeadAt: e.deadAt, LastError: e.lastErr,
		})
	}
	next := ""
	if j < len(q.dead) && j > i {
		next = strconv.FormatUint(q.dead[j-1].deadSeq, 10)
	}
	return out, next, nil
}

// Redrive implements Backend. Dead letters that would take the queue past
// MaxDepth stay dead; it then returns the count moved and ErrQueueFull.
func (m *Memory) Redrive(_ context.Context, name string, ids []string) (int, error) {
	q, err := m.queue(name)
	if err != nil {
		return 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return 0, ErrClosed
	}
	now := m.clock.Now()
	var pick []*entry
	if len(ids) == 0 {
		pick = append(pick, q.dead...)
	} else {
		for _, id := range ids {
			if e, ok := q.deadByID[id]; ok {
				pick = append(pick, e)
			}
		}
	}
	var full error
	if room := m.cfg.MaxDepth - q.live; len(pick) > room {
		pick, full = pick[:max(room, 0)], ErrQueueFull
	}
	for _, e := range pick {
		if q.deadByID[e.id] != e { // named twice
			continue
		}
		delete(q.deadByID, e.id)
		i := sort.Search(len(q.dead), func(i int) bool { return q.dead[i].deadSeq >= e.deadSeq })
		q.dead = append(q.dead[:i], q.dead[i+1:]...)
		q.seq++
		e.seq, e.queuedAt, e.attempts, e.token = q.seq, now, 0, 0
		e.state = stateReady
		q.place(e)
		q.pushFresh(e)
	}
	if !q.paused {
		q.wake(len(pick))
	}
	return len(pick), full
}

// Pause implements Backend.
func (m *Memory) Pause(_ context.Context, name string) error {
	q, err := m.queue(name)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.paused = true
	return nil
}

// Resume implements Backend.
func (m *Memory) Resume(_ context.Context, name string) error {
	q, err := m.queue(name)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.paused = false
	q.promote(m.clock.Now())
	q.wake(q.visible)
	return nil
}

// Stats implements Backend.
func (m *Memory) Stats(_ context.Context, name string) (Stats, error) {
	q, err := m.queue(name)
	if err != nil {
		return Stats{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return Stats{}, ErrClosed
	}
	now := m.clock.Now()
	q.promote(now)
	s := Stats{
		Depth: q.visible, InFlight: q.leased, Delayed: len(q.timed) + q.ringLive - q.leased, Dead: len(q.dead),
		Processed: q.processed, Failed: q.failed, Retried: q.retried, DeadDropped: q.deadDropped,
		Paused: q.paused,
	}
	for i := range q.fifo.len() {
		if r := q.fifo.at(i); q.isLive(r) {
			s.OldestAge = max(now.Sub(q.slots[r.slot].queuedAt), 0)
			break
		}
	}
	return s, nil
}

// ring is a first-in-first-out buffer that doubles when full and, past
// ringKeep elements, halves when a quarter full: it holds at most four
// times what it has held lately, and does not churn on small swings.
type ring[T any] struct {
	buf  []T // its length is zero or a power of two
	head int
	n    int
}

const ringKeep = 1024

func (r *ring[T]) len() int { return r.n }

// at returns the i-th element from the head; i < r.len().
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)&(len(r.buf)-1)] }

// peek returns the head; r.len() > 0.
func (r *ring[T]) peek() T { return r.buf[r.head] }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		r.resize(max(16, 2*len(r.buf)))
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

// pop removes and returns the head; r.len() > 0.
func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if len(r.buf) > ringKeep && r.n <= len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return v
}

func (r *ring[T]) resize(size int) {
	buf := make([]T, size)
	for i := range r.n {
		buf[i] = r.at(i)
	}
	r.buf, r.head = buf, 0
}

// clear empties the ring, giving back a large buffer.
func (r *ring[T]) clear() {
	if len(r.buf) > ringKeep {
		*r = ring[T]{}
		return
	}
	clear(r.buf)
	r.head, r.n = 0, 0
}

// visibleBefore reports whether a is delivered before b: higher priority
// first, then enqueue order.
func visibleBefore(a, b *entry) bool {
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	return a.seq < b.seq
}

// laterHeap orders the visible messages that are not in a fresh ring.
type laterHeap []*entry

func (h laterHeap) Len() int           { return len(h) }
func (h laterHeap) Less(i, j int) bool { return visibleBefore(h[i], h[j]) }
func (h laterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *laterHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *laterHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// timedHeap orders delayed and leased messages by when they become
// visible, then enqueue order. It is written out, rather than through
// container/heap, because every receive, ack and extension goes through it.
type timedHeap []*entry

func timedBefore(a, b *entry) bool {
	if !a.at.Equal(b.at) {
		return a.at.Before(b.at)
	}
	return a.seq < b.seq
}

func (h *timedHeap) push(e *entry) {
	e.index = len(*h)
	*h = append(*h, e)
	h.up(e.index)
}

// pop removes and returns the first entry; len(*h) > 0.
func (h *timedHeap) pop() *entry {
	e := (*h)[0]
	h.remove(0)
	return e
}

// remove removes the entry at i.
func (h *timedHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	if i != last {
		s[i] = s[last]
		s[i].index = i
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		h.fix(i)
	}
}

// fix restores the order after the entry at i changed its time.
func (h timedHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h timedHeap) up(i int) {
	e := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if !timedBefore(e, h[p]) {
			break
		}
		h[i] = h[p]
		h[i].index = i
		i = p
	}
	h[i] = e
	e.index = i
}

// down moves the entry at i down to its place and reports whether it moved.
func (h timedHeap) down(i0 int) bool {
	i, e := i0, h[i0]
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && timedBefore(h[r], h[c]) {
			c = r
		}
		if !timedBefore(h[c], e) {
			break
		}
		h[i] = h[c]
		h[i].index = i
		i = c
	}
	h[i] = e
	e.index = i
	return i > i0
}

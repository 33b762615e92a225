package queue

import (
	"container/heap"
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

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
// Each queue keeps its visible messages in a heap ordered by priority then
// enqueue order, and its delayed and leased messages in a second heap
// ordered by when they become visible; a receive moves the due ones across
// and pops, so every operation is O(log n) in the queue's size. Waiting
// receivers sleep on their own channel and are woken one per message made
// visible; one timer per queue, armed only while receivers wait, wakes them
// when a delay or a lease ends.
//
// All methods are safe for concurrent use.
type Memory struct {
	cfg   MemoryOptions
	clock clock.Clock
	ids   ids.Generator
	done  chan struct{} // closed by Close

	mu     sync.RWMutex
	closed bool                 // guarded by mu
	queues map[string]*memQueue // guarded by mu
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
	return &Memory{
		cfg:    opts,
		clock:  clock.Or(opts.Clock),
		done:   make(chan struct{}),
		queues: make(map[string]*memQueue),
	}
}

// Close ends every waiting Receive with ErrClosed and makes every later
// call fail with ErrClosed. The messages are gone.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	qs := m.queues
	m.mu.Unlock()
	for _, q := range qs {
		q.mu.Lock()
		q.closed = true
		if q.timer != nil {
			q.timer.Stop()
		}
		q.mu.Unlock()
	}
	return nil
}

// queue returns the named queue, creating it on first use.
func (m *Memory) queue(name string) (*memQueue, error) {
	m.mu.RLock()
	q, ok := m.queues[name]
	closed := m.closed
	m.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if ok {
		return q, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if q, ok := m.queues[name]; ok {
		return q, nil
	}
	if len(m.queues) >= m.cfg.MaxQueues {
		return nil, ErrTooManyQueues
	}
	q = &memQueue{m: m, byID: make(map[string]*entry), deadByID: make(map[string]*entry), dedup: make(map[string]dedupRec)}
	m.queues[name] = q
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
	index      int       // position in ready or timed heap
	deadSeq    uint64
	deadAt     time.Time
}

type dedupRec struct {
	id      string
	expires time.Time
}

type memQueue struct {
	m *Memory

	mu       sync.Mutex
	closed   bool              // guarded by mu
	paused   bool              // guarded by mu
	seq      uint64            // guarded by mu
	token    uint64            // last lease token; guarded by mu
	ready    readyHeap         // guarded by mu
	timed    timedHeap         // delayed and leased; guarded by mu
	byID     map[string]*entry // ready, delayed and leased; guarded by mu
	leased   int               // guarded by mu
	fifo     []*entry          // live entries in queuedAt order, plus gone ones not yet skipped; guarded by mu
	dead     []*entry          // in deadSeq order; guarded by mu
	deadByID map[string]*entry // guarded by mu
	deadSeq  uint64            // guarded by mu
	dedup    map[string]dedupRec
	dedupQ   []dedupKey // keys in expiry order (the window is fixed); guarded by mu
	waiters  []*waiter  // receivers waiting, first come first woken; guarded by mu
	timer    clock.Timer
	timerAt  time.Time // when timer fires; zero when disarmed; guarded by mu

	processed, failed, retried, deadDropped uint64 // guarded by mu
}

type dedupKey struct {
	key     string
	expires time.Time
}

// waiter is one Receive waiting for a message. ch (buffered 1) gets a value
// when the waiter is woken; a woken waiter has been removed from the list.
type waiter struct{ ch chan struct{} }

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
	res := make([]EnqueueResult, len(msgs))
	idbuf := make([]byte, 0, ids.Len*len(msgs))
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	now := m.clock.Now()
	q.expireDedup(now)
	if len(q.byID)+len(msgs) > m.cfg.MaxDepth {
		return nil, ErrQueueFull
	}
	// Ids for the whole batch in one string, sliced per message.
	for range msgs {
		idbuf = m.ids.AppendID(idbuf, now)
	}
	all := string(idbuf)
	var batchKeys map[string]string // dedup keys first seen in this batch
	woken := 0
	for i, msg := range msgs {
		id := all[i*ids.Len : (i+1)*ids.Len]
		if msg.DedupKey != "" {
			if rec, ok := q.dedup[msg.DedupKey]; ok {
				res[i] = EnqueueResult{ID: rec.id, Duplicate: true}
				continue
			}
			if first, ok := batchKeys[msg.DedupKey]; ok {
				res[i] = EnqueueResult{ID: first, Duplicate: true}
				continue
			}
			if batchKeys == nil {
				batchKeys = make(map[string]string)
			}
			batchKeys[msg.DedupKey] = id
		}
		res[i] = EnqueueResult{ID: id}
		q.seq++
		e := &entry{id: id, body: msg.Body, header: msg.Header, priority: msg.Priority, seq: q.seq, enqueuedAt: now, queuedAt: now}
		q.byID[id] = e
		q.fifo = append(q.fifo, e)
		at := msg.RunAt
		if msg.Delay > 0 {
			at = now.Add(msg.Delay)
		}
		if at.After(now) {
			e.state, e.at = stateDelayed, at
			heap.Push(&q.timed, e)
		} else {
			e.state = stateReady
			heap.Push(&q.ready, e)
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
	for len(q.timed) > 0 && !q.timed[0].at.After(now) {
		e := heap.Pop(&q.timed).(*entry)
		if e.state == stateLeased {
			q.leased--
		}
		e.state = stateReady
		heap.Push(&q.ready, e)
		n++
	}
	return n
}

// wake wakes up to n waiting receivers, first come first.
func (q *memQueue) wake(n int) {
	for n > 0 && len(q.waiters) > 0 {
		w := q.waiters[0]
		q.waiters[0] = nil
		q.waiters = q.waiters[1:]
		w.ch <- struct{}{}
		n--
	}
}

// armTimer makes sure that, while receivers wait, the queue's timer fires
// when the next delayed or leased message becomes visible.
func (q *memQueue) armTimer(now time.Time) {
	if len(q.waiters) == 0 || len(q.timed) == 0 || q.closed {
		return
	}
	at := q.timed[0].at
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
		q.wake(len(q.ready))
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
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := m.queue(name)
	if err != nil {
		return nil, err
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
			return nil, ErrClosed
		}
		now := m.clock.Now()
		q.promote(now)
		if !q.paused && len(q.ready) > 0 {
			ds := q.take(now, opts)
			if len(q.ready) > 0 {
				q.wake(len(q.ready))
			}
			q.armTimer(now)
			q.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return ds, nil
		}
		if deadline.IsZero() {
			deadline = now.Add(opts.Wait)
		}
		if !now.Before(deadline) {
			q.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return nil, nil
		}
		if w == nil {
			w = &waiter{ch: make(chan struct{}, 1)}
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
				q.wake(len(q.ready))
			}
		}
		q.mu.Unlock()
		if t != nil {
			t.Stop()
		}
		return nil, stop
	}
}

// take leases up to opts.Max ready messages. q.mu is held.
func (q *memQueue) take(now time.Time, opts ReceiveOptions) []Delivery {
	n := min(opts.Max, len(q.ready))
	ds := make([]Delivery, n)
	until := now.Add(opts.Lease)
	for i := range ds {
		e := heap.Pop(&q.ready).(*entry)
		e.attempts++
		if e.attempts > 1 {
			q.retried++
		}
		q.token++
		e.token = q.token
		e.state, e.at = stateLeased, until
		q.leased++
		heap.Push(&q.timed, e)
		ds[i] = Delivery{
			ID: e.id, Body: e.body, Header: e.header, Priority: e.priority,
			Attempt: e.attempts, EnqueuedAt: e.enqueuedAt, LastError: e.lastErr,
			Receipt: makeReceipt(e.token, e.id),
		}
	}
	return ds
}

// A memory receipt is "<token in base 36>.<id>": the id finds the entry,
// the token proves the lease is the current one.
func makeReceipt(token uint64, id string) Receipt {
	var buf [13 + 1 + ids.Len]byte
	b := strconv.AppendUint(buf[:0], token, 36)
	b = append(b, '.')
	b = append(b, id...)
	return Receipt(b)
}

func parseReceipt(r Receipt) (uint64, string, error) {
	tok, id, ok := strings.Cut(string(r), ".")
	if !ok || id == "" {
		return 0, "", invalid("receipt", "not a receipt of this backend")
	}
	n, err := strconv.ParseUint(tok, 36, 64)
	if err != nil {
		return 0, "", invalid("receipt", "not a receipt of this backend")
	}
	return n, id, nil
}

// leased finds the entry a receipt holds, with q.mu held, or fails with
// ErrStaleReceipt.
func (m *Memory) leased(name string, r Receipt) (*memQueue, *entry, time.Time, error) {
	token, id, err := parseReceipt(r)
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
	now := m.clock.Now()
	e := q.byID[id]
	if e == nil || e.state != stateLeased || e.token != token || !now.Before(e.at) {
		q.mu.Unlock()
		return nil, nil, time.Time{}, ErrStaleReceipt
	}
	return q, e, now, nil
}

// Extend implements Backend.
func (m *Memory) Extend(_ context.Context, name string, r Receipt, lease time.Duration) error {
	q, e, now, err := m.leased(name, r)
	if err != nil {
		return err
	}
	e.at = now.Add(lease)
	heap.Fix(&q.timed, e.index)
	q.mu.Unlock()
	return nil
}

// Ack implements Backend.
func (m *Memory) Ack(_ context.Context, name string, r Receipt) error {
	q, e, _, err := m.leased(name, r)
	if err != nil {
		return err
	}
	heap.Remove(&q.timed, e.index)
	q.leased--
	q.processed++
	q.forget(e)
	q.mu.Unlock()
	return nil
}

// forget drops a message that left the queue (acked or dead). q.mu is held.
func (q *memQueue) forget(e *entry) {
	delete(q.byID, e.id)
	e.state = stateGone
	// Skip gone entries at the head of fifo; compact when gone ones
	// elsewhere make it more than twice the live count.
	i := 0
	for i < len(q.fifo) && q.fifo[i].state == stateGone {
		q.fifo[i] = nil
		i++
	}
	q.fifo = q.fifo[i:]
	if len(q.fifo) > 2*len(q.byID)+1024 {
		live := make([]*entry, 0, 2*len(q.byID)+16)
		for _, x := range q.fifo {
			if x.state != stateGone {
				live = append(live, x)
			}
		}
		q.fifo = live
	}
}

// Nack implements Backend.
func (m *Memory) Nack(_ context.Context, name string, r Receipt, delay time.Duration, lastErr string) error {
	q, e, now, err := m.leased(name, r)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	q.failed++
	q.leased--
	e.lastErr = lastErr
	e.token = 0
	if delay <= 0 {
		heap.Remove(&q.timed, e.index)
		e.state = stateReady
		heap.Push(&q.ready, e)
		if !q.paused {
			q.wake(1)
		}
		return nil
	}
	e.state, e.at = stateDelayed, now.Add(delay)
	heap.Fix(&q.timed, e.index)
	q.armTimer(now)
	return nil
}

// DeadLetter implements Backend.
func (m *Memory) DeadLetter(_ context.Context, name string, r Receipt, lastErr string) error {
	q, e, now, err := m.leased(name, r)
	if err != nil {
		return err
	}
	defer q.mu.Unlock()
	q.failed++
	q.leased--
	heap.Remove(&q.timed, e.index)
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
	if room := m.cfg.MaxDepth - len(q.byID); len(pick) > room {
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
		q.byID[e.id] = e
		q.fifo = append(q.fifo, e)
		heap.Push(&q.ready, e)
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
	q.wake(len(q.ready))
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
		Depth: len(q.ready), InFlight: q.leased, Delayed: len(q.timed) - q.leased, Dead: len(q.dead),
		Processed: q.processed, Failed: q.failed, Retried: q.retried, DeadDropped: q.deadDropped,
		Paused: q.paused,
	}
	for _, e := range q.fifo {
		if e.state != stateGone {
			s.OldestAge = max(now.Sub(e.queuedAt), 0)
			break
		}
	}
	return s, nil
}

// readyHeap orders visible messages: higher priority first, then enqueue
// order.
type readyHeap []*entry

func (h readyHeap) Len() int { return len(h) }
func (h readyHeap) Less(i, j int) bool {
	if h[i].priority != h[j].priority {
		return h[i].priority > h[j].priority
	}
	return h[i].seq < h[j].seq
}
func (h readyHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *readyHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *readyHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// timedHeap orders delayed and leased messages by when they become
// visible, then enqueue order.
type timedHeap []*entry

func (h timedHeap) Len() int { return len(h) }
func (h timedHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h timedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timedHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *timedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

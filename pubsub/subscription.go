package pubsub

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// sharedSub reads an exact topic straight from the topic's ring: it holds
// only its position. Used for the Disconnect and DropOldest policies.
type sharedSub struct {
	b        *Broker
	t        *topic
	cfg      SubscribeConfig
	liveFrom uint64        // topic head when the subscription opened
	pos      atomic.Uint64 // next index to read; written under rmu, read by reclaim
	wake     chan struct{} // a publish happened (capacity 1)
	parked   bool          // in t.waiters; guarded by t.wmu
	done     chan struct{} // closed by end
	stop     func() bool   // stops the context watcher

	rmu     sync.Mutex // one reader at a time
	gap     *GapError  // to report on the next read; guarded by rmu
	gapSeen uint64     // broker gap generation reported; guarded by rmu
	once    sync.Once
	err     atomic.Pointer[error] // why the subscription ended
	dropped atomic.Uint64
}

var _ Subscription = (*sharedSub)(nil)

func (s *sharedSub) Next(ctx context.Context) (Message, error) {
	var one [1]Message
	got, err := s.NextBatch(ctx, one[:0])
	if err != nil {
		return Message{}, err
	}
	return got[0], nil
}

func (s *sharedSub) NextBatch(ctx context.Context, buf []Message) ([]Message, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if g := s.gap; g != nil {
		s.gap = nil
		return buf, g
	}
	limit := max(cap(buf), len(buf)+1)
	for {
		if err := s.ended(); err != nil {
			return buf, err
		}
		if g := s.b.pendingGap(&s.gapSeen); g != nil {
			return buf, g
		}
		n := len(buf)
		out, err := s.take(buf, limit)
		if err != nil || len(out) > n {
			return out, err
		}
		if err := s.park(ctx); err != nil {
			return buf, err
		}
	}
}

// take appends what is waiting, up to limit messages in buf. Called with rmu
// held.
func (s *sharedSub) take(buf []Message, limit int) ([]Message, error) {
	t := s.t
	h := t.head.Load()
	r := t.ring.Load()
	pos := s.pos.Load()
	if pos >= h {
		return buf, nil
	}
	var dropped uint64
	if base := max(pos, s.liveFrom); h > base && h-base > uint64(s.cfg.Buffer) {
		if s.cfg.Overflow == Disconnect {
			s.end(ErrSlowConsumer)
			return buf, ErrSlowConsumer
		}
		np := h - uint64(s.cfg.Buffer)
		dropped += np - pos
		pos = np
	}
	n := len(buf)
	for pos < h && len(buf) < limit {
		e := r.slots[pos&r.mask].Load()
		if e == nil || e.idx != pos { // overwritten: we fell behind the ring
			if s.cfg.Overflow == Disconnect {
				s.end(ErrSlowConsumer)
				return buf[:n], ErrSlowConsumer
			}
			dropped++
			pos++
			continue
		}
		buf = append(buf, e.msg)
		pos++
	}
	s.pos.Store(pos)
	if dropped > 0 {
		s.dropped.Add(dropped)
		t.dropped.Add(dropped)
	}
	if d := len(buf) - n; d > 0 {
		t.delivered.Add(uint64(d))
	}
	return buf, nil
}

// park waits until a publish, the end of ctx, the subscription or the
// broker. Called with rmu held.
func (s *sharedSub) park(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err // a drain that must not wait
	}
	t := s.t
	t.wmu.Lock()
	if t.head.Load() != s.pos.Load() {
		t.wmu.Unlock()
		return nil
	}
	if !s.parked {
		s.parked = true
		t.waiters = append(t.waiters, s)
	}
	t.wmu.Unlock()
	select {
	case <-s.wake:
		return nil
	case <-s.done:
		return nil
	case <-s.b.done:
		s.end(ErrClosed)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *sharedSub) ended() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	select {
	case <-s.b.done:
		s.end(ErrClosed)
		return ErrClosed
	default:
		return nil
	}
}

// end finishes the subscription with err (the first reason wins).
func (s *sharedSub) end(err error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.once.Do(func() {
		s.err.Store(&err)
		close(s.done)
		if s.stop != nil {
			s.stop()
		}
		s.b.removeShared(s)
	})
}

func (s *sharedSub) Close() error {
	s.end(ErrClosed)
	return nil
}

// Dropped reports how many messages the overflow policy discarded.
func (s *sharedSub) Dropped() uint64 { return s.dropped.Load() }

// privSub has its own bounded queue of entries, filled by Publish. Used for
// wildcard patterns and the DropNewest and Block policies.
type privSub struct {
	b       *Broker
	pattern string
	wild    bool
	cfg     SubscribeConfig
	wake    chan struct{} // a message was queued (capacity 1)
	room    chan struct{} // the reader made room (capacity 1), for Block
	done    chan struct{} // closed by end
	stop    func() bool

	topics  map[*topic]struct{} // topics it is registered with; guarded by b.mu
	removed bool                // guarded by b.mu

	rmu     sync.Mutex // one reader at a time
	gap     *GapError  // guarded by rmu
	gapSeen uint64     // broker gap generation reported; guarded by rmu

	mu     sync.Mutex
	replay []*entry // history to deliver first; guarded by mu
	q      []*entry // ring of live entries, grown up to cfg.Buffer; guarded by mu
	qhead  int      // index of the oldest queued entry; guarded by mu
	qlen   int      // guarded by mu
	err    error    // guarded by mu

	once    sync.Once
	dropped atomic.Uint64
}

var _ Subscription = (*privSub)(nil)

// signal wakes the reader.
func (s *privSub) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// full reports whether the live queue is at its bound.
func (s *privSub) full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err == nil && s.qlen >= s.cfg.Buffer
}

// push queues e, applying the overflow policy. Called with b.mu held; for
// Block subscriptions Publish has checked there is room.
func (s *privSub) push(e *entry, t *topic) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if s.qlen >= s.cfg.Buffer {
		switch s.cfg.Overflow {
		case DropNewest:
			s.mu.Unlock()
			s.dropped.Add(1)
			t.dropped.Add(1)
			return
		case DropOldest:
			s.q[s.qhead] = nil
			s.qhead = (s.qhead + 1) % len(s.q)
			s.qlen--
			s.dropped.Add(1)
			t.dropped.Add(1)
		default: // Disconnect, or Block that ran out of time
			s.mu.Unlock()
			s.endLocked(ErrSlowConsumer)
			return
		}
	}
	if s.qlen == len(s.q) {
		s.grow()
	}
	s.q[(s.qhead+s.qlen)%len(s.q)] = e
	s.qlen++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// grow doubles the queue, up to the buffer bound. Called with mu held.
func (s *privSub) grow() {
	n := min(max(2*len(s.q), 8), s.cfg.Buffer)
	q := make([]*entry, n)
	for i := 0; i < s.qlen; i++ {
		q[i] = s.q[(s.qhead+i)%len(s.q)]
	}
	s.q, s.qhead = q, 0
}

func (s *privSub) Next(ctx context.Context) (Message, error) {
	var one [1]Message
	got, err := s.NextBatch(ctx, one[:0])
	if err != nil {
		return Message{}, err
	}
	return got[0], nil
}

func (s *privSub) NextBatch(ctx context.Context, buf []Message) ([]Message, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if g := s.gap; g != nil {
		s.gap = nil
		return buf, g
	}
	limit := max(cap(buf), len(buf)+1)
	for {
		if g := s.b.pendingGap(&s.gapSeen); g != nil {
			return buf, g
		}
		n := len(buf)
		out, err := s.take(buf, limit)
		if err != nil || len(out) > n {
			return out, err
		}
		if err := ctx.Err(); err != nil {
			return buf, err // a drain that must not wait
		}
		select {
		case <-s.wake:
		case <-s.done:
		case <-s.b.done:
			s.end(ErrClosed)
		case <-ctx.Done():
			return buf, ctx.Err()
		}
	}
}

// take appends queued entries, replay first, up to limit messages in buf.
func (s *privSub) take(buf []Message, limit int) ([]Message, error) {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return buf, err
	}
	select {
	case <-s.b.done:
		s.mu.Unlock()
		s.end(ErrClosed)
		return buf, ErrClosed
	default:
	}
	for len(s.replay) > 0 && len(buf) < limit {
		s.replay[0].top.delivered.Add(1)
		buf = append(buf, s.replay[0].msg)
		s.replay[0] = nil
		s.replay = s.replay[1:]
	}
	if len(s.replay) == 0 {
		s.replay = nil
	}
	freed := false
	for s.qlen > 0 && len(buf) < limit {
		e := s.q[s.qhead]
		s.q[s.qhead] = nil
		s.qhead = (s.qhead + 1) % len(s.q)
		s.qlen--
		e.top.delivered.Add(1)
		buf = append(buf, e.msg)
		freed = true
	}
	s.mu.Unlock()
	if freed && s.cfg.Overflow == Block {
		select {
		case s.room <- struct{}{}:
		default:
		}
	}
	return buf, nil
}

// waitForRoom waits until the reader takes something, the subscription
// ends, or the block timeout passes, in which case the subscription is
// ended as a slow consumer.
func (s *privSub) waitForRoom(ctx context.Context, b *Broker) error {
	timer := b.clock.NewTimer(s.cfg.BlockTimeout)
	defer timer.Stop()
	for {
		if !s.full() {
			return nil
		}
		select {
		case <-s.room:
		case <-s.done:
			return nil
		case <-b.done:
			return ErrClosed
		case <-timer.C():
			s.end(ErrSlowConsumer)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// end finishes the subscription with err (the first reason wins).
func (s *privSub) end(err error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.endLocked(err)
}

// endLocked is end with b.mu held.
func (s *privSub) endLocked(err error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.replay = nil
		clear(s.q)
		s.qlen = 0
		s.mu.Unlock()
		close(s.done)
		if s.stop != nil {
			s.stop()
		}
		s.b.removePrivate(s)
	})
}

func (s *privSub) Close() error {
	s.end(ErrClosed)
	return nil
}

// Dropped reports how many messages the overflow policy discarded.
func (s *privSub) Dropped() uint64 { return s.dropped.Load() }

func sortEntries(es []*entry) {
	slices.SortFunc(es, func(a, b *entry) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
}

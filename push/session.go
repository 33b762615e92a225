package push

import (
	"context"
	"errors"
	"sync"

	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/pubsub"
)

// session is one connection on the hub: the reader is the Serve call's
// goroutine, the writer its own, plus a replay goroutine for each
// subscription still catching up by cursor.
type session struct {
	h      *Hub
	id     string
	user   string
	c      Conn
	ctx    context.Context // ends the writer, the reader and the replays
	cancel context.CancelFunc
	wg     sync.WaitGroup // the writer and the replays
	wake   chan struct{}  // something to write or to close; capacity 1
	room   chan struct{}  // the writer took the queue; capacity 1
	direct []*fanout      // the user's and the broadcast fan-outs; set under h.mu

	mu     sync.Mutex
	queue  [][]byte             // frames waiting for the writer; guarded by mu
	spare  [][]byte             // the writer's last queue, for reuse; guarded by mu
	qbytes int                  // bytes in queue; guarded by mu
	code   StatusCode           // nonzero: close with it; guarded by mu
	reason string               // guarded by mu
	drops  bool                 // DropNewest dropped something; guarded by mu
	subs   map[string]*subState // by pattern; guarded by mu
}

// subState is one subscription of a session. Until live, messages of the
// shared fan-out wait in pending while the replay catches up by cursor.
type subState struct {
	f       *fanout
	live    bool             // guarded by session.mu
	pending []pubsub.Message // guarded by session.mu
	cancel  context.CancelFunc
}

func newSession(h *Hub, ctx context.Context, c Conn, user string) *session {
	ctx, cancel := context.WithCancel(ctx)
	return &session{
		h: h, id: ids.New(), user: user, c: c, ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1), room: make(chan struct{}, 1),
		subs: make(map[string]*subState),
	}
}

func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pushLocked queues frame, applying the slow-consumer policy when the
// queue is full. It reports whether frame was queued. The caller holds
// s.mu and signals the writer afterwards.
func (s *session) pushLocked(frame []byte) bool {
	if s.code != 0 {
		return false
	}
	cfg := &s.h.cfg
	if len(s.queue) > 0 && (len(s.queue) >= cfg.queueMessages || s.qbytes+len(frame) > cfg.queueBytes) {
		if cfg.slow == DropNewest {
			s.drops = true
			return false
		}
		s.failLocked(StatusSlowConsumer, "send queue full: reconnect and resume")
		return false
	}
	s.queue = append(s.queue, frame)
	s.qbytes += len(frame)
	return true
}

func (s *session) failLocked(code StatusCode, reason string) {
	if s.code != 0 {
		return
	}
	s.code, s.reason = code, reason
	clear(s.queue)
	s.queue, s.qbytes = s.queue[:0], 0
}

func (s *session) push(frame []byte) bool {
	s.mu.Lock()
	ok := s.pushLocked(frame)
	s.mu.Unlock()
	s.signal()
	return ok
}

// pushWait queues frame, waiting for room rather than overflowing: replays
// use it, so that history longer than the queue streams out at the pace
// of the client.
func (s *session) pushWait(ctx context.Context, frame []byte) bool {
	cfg := &s.h.cfg
	for {
		s.mu.Lock()
		if s.code != 0 {
			s.mu.Unlock()
			return false
		}
		if len(s.queue) == 0 || (len(s.queue) < cfg.queueMessages && s.qbytes+len(frame) <= cfg.queueBytes) {
			s.queue = append(s.queue, frame)
			s.qbytes += len(frame)
			s.mu.Unlock()
			s.signal()
			return true
		}
		s.mu.Unlock()
		select {
		case <-s.room:
		case <-ctx.Done():
			return false
		}
	}
}

// closeWith makes the writer close the connection with code, dropping
// what is queued.
func (s *session) closeWith(code StatusCode, reason string) {
	s.mu.Lock()
	s.failLocked(code, reason)
	s.mu.Unlock()
	s.signal()
}

// deliver queues a fan-out's batch.
func (s *session) deliver(f *fanout, msgs []pubsub.Message, frames [][]byte) {
	s.mu.Lock()
	if f.topic {
		st := s.subs[f.pattern]
		if st == nil || st.f != f {
			s.mu.Unlock()
			return
		}
		if !st.live {
			if len(st.pending)+len(msgs) > s.h.cfg.queueMessages {
				s.failLocked(StatusSlowConsumer, "send queue full: reconnect and resume")
			} else {
				st.pending = append(st.pending, msgs...)
			}
			s.mu.Unlock()
			s.signal()
			return
		}
	}
	for _, fr := range frames {
		if !s.pushLocked(fr) && s.code != 0 {
			break
		}
	}
	s.mu.Unlock()
	s.signal()
}

func (s *session) deliverGap(f *fanout, frame []byte) {
	if f.topic {
		s.mu.Lock()
		st := s.subs[f.pattern]
		s.mu.Unlock()
		if st == nil || st.f != f {
			return
		}
	}
	s.push(frame)
}

// topicFanouts removes every subscription and returns their fan-outs. The
// caller holds h.mu.
func (s *session) topicFanouts() []*fanout {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*fanout, 0, len(s.subs))
	for p, st := range s.subs {
		if st.cancel != nil {
			st.cancel()
		}
		out = append(out, st.f)
		delete(s.subs, p)
	}
	return out
}

func (s *session) readLoop() {
	limit := s.h.cfg.readLimit
	for {
		frame, err := s.c.Read(s.ctx)
		if err != nil {
			return
		}
		if len(frame) > limit {
			s.closeWith(StatusMessageTooBig, "message larger than the read limit")
			continue
		}
		if err := decodeFrame(frame, s.handle); err != nil {
			s.closeWith(StatusInvalidData, "malformed frame: "+err.Error())
		}
	}
}

func (s *session) handle(m *wireMsg) error {
	switch m.Type {
	case TypeSubscribe:
		s.subscribe(m.ID, m.Topic, pubsub.Cursor(m.After))
	case TypeUnsubscribe:
		s.unsubscribe(m.ID, m.Topic)
	case TypeSend:
		s.onSend(m)
	default:
		s.push(encodeError(m.ID, "unknown message type "+m.Type))
	}
	return nil
}

func (s *session) reply(id string, data []byte, err error) {
	if id == "" {
		return
	}
	if err != nil {
		s.push(encodeError(id, err.Error()))
		return
	}
	s.push(encodeReply(id, data))
}

func (s *session) subscribe(id, pattern string, after pubsub.Cursor) {
	h := s.h
	if err := pubsub.ValidatePattern(pattern); err != nil {
		s.reply(id, nil, err)
		return
	}
	if h.reserved(pattern) {
		s.reply(id, nil, errors.New("push: reserved pattern "+pattern))
		return
	}
	if h.cfg.canSubscribe != nil {
		if err := h.cfg.canSubscribe(s.ctx, s.user, pattern); err != nil {
			s.reply(id, nil, err)
			return
		}
	}
	h.mu.Lock()
	s.mu.Lock()
	_, dup := s.subs[pattern]
	n := len(s.subs)
	s.mu.Unlock()
	switch {
	case h.closing:
		h.mu.Unlock()
		return
	case dup:
		h.mu.Unlock()
		s.reply(id, nil, nil)
		return
	case n >= h.cfg.maxSubs:
		h.mu.Unlock()
		s.reply(id, nil, errors.New("push: too many subscriptions"))
		return
	}
	f, err := h.fanoutFor(pattern, true)
	if err != nil {
		h.mu.Unlock()
		s.reply(id, nil, errors.New("push: cannot subscribe: "+err.Error()))
		return
	}
	st := &subState{f: f, live: after == ""}
	var ctx context.Context
	if after != "" {
		ctx, st.cancel = context.WithCancel(s.ctx)
	}
	s.mu.Lock()
	s.subs[pattern] = st
	s.mu.Unlock()
	f.add(s)
	h.mu.Unlock()
	s.reply(id, nil, nil)
	if after != "" {
		s.wg.Add(1)
		go s.replay(ctx, st, after)
	}
}

func (s *session) unsubscribe(id, pattern string) {
	s.h.mu.Lock()
	s.mu.Lock()
	st := s.subs[pattern]
	delete(s.subs, pattern)
	s.mu.Unlock()
	if st != nil {
		if st.cancel != nil {
			st.cancel()
		}
		st.f.remove(s)
	}
	s.h.mu.Unlock()
	s.reply(id, nil, nil)
}

func (s *session) onSend(m *wireMsg) {
	f := s.h.cfg.onMessage
	if f == nil {
		s.reply(m.ID, nil, errors.New("push: the server takes no messages"))
		return
	}
	data, err := f(s.ctx, &Request{Conn: s.id, User: s.user, ID: m.ID, Data: m.payload()})
	s.reply(m.ID, data, err)
}

// replay sends what the broker retains after the cursor, then hands the
// subscription over to the shared fan-out: it reads a private subscription
// After(cursor) until that reaches the first message the fan-out held back
// for this connection, then releases the held messages it has not sent.
// Every message after the cursor is sent once, in order.
func (s *session) replay(ctx context.Context, st *subState, after pubsub.Cursor) {
	defer s.wg.Done()
	f := st.f
	opts := []pubsub.SubscribeOption{pubsub.Buffer(s.h.cfg.queueMessages)}
	sub, err := s.h.b.Subscribe(ctx, f.pattern, append(opts, pubsub.After(after))...)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		reason := "replay unavailable"
		if errors.Is(err, pubsub.ErrInvalidCursor) {
			reason = "unknown cursor"
		}
		s.push(encodeGap(f.pattern, string(after), reason))
		s.goLive(st, pubsub.Position{}, false)
		return
	}
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	var last pubsub.Position
	var lastCursor pubsub.Cursor
	has := false
	buf := make([]pubsub.Message, 0, fanBatch)
	for {
		batch, err := sub.NextBatch(ctx, buf[:0])
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.Is(err, pubsub.ErrGap):
			var g *pubsub.GapError
			errors.As(err, &g)
			if !s.pushWait(ctx, encodeGap(f.pattern, string(g.After), g.Reason)) {
				return
			}
			continue
		case errors.Is(err, pubsub.ErrSlowConsumer):
			sub.Close()
			if sub, err = s.h.b.Subscribe(ctx, f.pattern, append(opts, pubsub.After(lastCursor))...); err != nil {
				s.closeWith(StatusTryAgainLater, "broker subscription lost")
				return
			}
			continue
		default:
			s.closeWith(StatusTryAgainLater, "broker subscription lost")
			return
		}
		stop, live := s.handoff(st)
		for i := range batch {
			m := &batch[i]
			_, pos, perr := m.Cursor.Parse()
			if live && perr == nil && !pos.Less(stop) {
				s.goLive(st, last, has)
				return
			}
			if !s.pushWait(ctx, f.frame(m)) {
				return
			}
			if perr == nil {
				last, lastCursor, has = pos, m.Cursor, true
			}
		}
		clear(batch)
	}
}

// handoff returns the position of the first message the fan-out held back,
// if any.
func (s *session) handoff(st *subState) (pubsub.Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(st.pending) == 0 {
		return pubsub.Position{}, false
	}
	_, pos, err := st.pending[0].Cursor.Parse()
	return pos, err == nil
}

// goLive queues the held-back messages after last and makes the
// subscription live.
func (s *session) goLive(st *subState, last pubsub.Position, has bool) {
	s.mu.Lock()
	for i := range st.pending {
		m := &st.pending[i]
		if has {
			if _, pos, err := m.Cursor.Parse(); err == nil && !last.Less(pos) {
				continue
			}
		}
		if !s.pushLocked(st.f.frame(m)) && s.code != 0 {
			break
		}
	}
	st.pending, st.live = nil, true
	s.mu.Unlock()
	s.signal()
}

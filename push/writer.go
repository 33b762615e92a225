package push

import (
	"context"
	"sync"

	"github.com/switchboard-go/switchboard/internal/clock"
)

// frames lends writers the buffer they pack a frame in, only while they
// write, so an idle connection holds none.
var frames = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeLoop is the connection's one writer (t is its heartbeat timer, nil
// without heartbeats): it packs everything queued
// into as few frames as MaxFrameBytes allows, pings on the heartbeat, and
// closes the connection when asked to. When it returns, the session is
// over.
func (s *session) writeLoop(t clock.Timer) {
	defer s.wg.Done()
	defer s.cancel()
	cfg := &s.h.cfg
	if t != nil {
		defer t.Stop()
		beat := t.C()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-beat:
				if err := s.ping(); err != nil {
					if s.ctx.Err() == nil {
						_ = s.c.Close(StatusPingTimeout, "no pong in time")
					}
					return
				}
				t.Reset(cfg.heartbeat)
			case <-s.wake:
				if !s.flush() {
					return
				}
			}
		}
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
			if !s.flush() {
				return
			}
		}
	}
}

// flush writes what is queued. It reports false when the connection is
// over (closed on request, or a write failed).
func (s *session) flush() bool {
	s.mu.Lock()
	q := s.queue
	s.queue, s.spare = s.spare[:0], nil
	s.qbytes = 0
	code, reason, drops := s.code, s.reason, s.drops
	s.drops = false
	s.mu.Unlock()
	select {
	case s.room <- struct{}{}:
	default:
	}
	if code != 0 {
		_ = s.c.Close(code, reason)
		return false
	}
	ok := true
	if drops {
		ok = s.write(encodeGap("", "", "dropped"))
	}
	switch {
	case !ok || len(q) == 0:
	case len(q) == 1:
		ok = s.write(q[0])
	default:
		bp := frames.Get().(*[]byte)
		b := (*bp)[:0]
		for _, fr := range q {
			if len(b) > 0 && len(b)+1+len(fr) > MaxFrameBytes {
				if ok = s.write(b); !ok {
					break
				}
				b = b[:0]
			}
			if len(b) > 0 {
				b = append(b, '\n')
			}
			b = append(b, fr...)
		}
		if ok && len(b) > 0 {
			ok = s.write(b)
		}
		if cap(b) <= 4*MaxFrameBytes {
			*bp = b[:0]
			frames.Put(bp)
		}
	}
	clear(q)
	s.mu.Lock()
	s.spare = q[:0]
	s.mu.Unlock()
	return ok
}

// write sends one frame within the write timeout. A peer that does not
// take it in time is a slow consumer.
func (s *session) write(b []byte) bool {
	ctx, cancel := context.WithCancel(s.ctx)
	t := s.h.clock.AfterFunc(s.h.cfg.writeTimeout, cancel)
	err := s.c.Write(ctx, b)
	t.Stop()
	cancel()
	if err != nil {
		if s.ctx.Err() == nil {
			_ = s.c.Close(StatusSlowConsumer, "write timeout: reconnect and resume")
		}
		return false
	}
	return true
}

func (s *session) ping() error {
	ctx, cancel := context.WithCancel(s.ctx)
	t := s.h.clock.AfterFunc(s.h.cfg.pongTimeout, cancel)
	defer t.Stop()
	defer cancel()
	return s.c.Ping(ctx)
}

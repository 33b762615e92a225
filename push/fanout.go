package push

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"

	"github.com/switchboard-go/switchboard/pubsub"
)

// fanoutBuffer bounds the broker subscription behind each fan-out. The
// fan-out only copies frame pointers into connection queues, so it falls
// behind only under extreme load; when it does, it resubscribes after the
// last cursor it handled and loses nothing the broker retains.
const fanoutBuffer = 8192

// fanBatch is how many messages a fan-out takes from the broker at once.
const fanBatch = 256

// fanout is the hub's one broker subscription to a pattern, delivering to
// the local connections that want it.
type fanout struct {
	h       *Hub
	pattern string
	topic   bool // a client subscription (messages carry sub, topic, cursor)
	enc     func(*pubsub.Message) []byte
	cancel  context.CancelFunc

	// members is replaced, never modified, under h.mu; the fan-out reads
	// it without a lock.
	members atomic.Pointer[[]*session]
}

// directKey is the Message.Encoded key of messages addressed to a user or
// to everyone: they are encoded without sub, topic and cursor.
type directKeyType struct{}

var directKey = &directKeyType{}

// fanoutFor returns the fan-out of pattern, starting one if there is none.
// The caller holds h.mu.
func (h *Hub) fanoutFor(pattern string, topic bool) (*fanout, error) {
	if f := h.fans[pattern]; f != nil {
		return f, nil
	}
	ctx, cancel := context.WithCancel(h.ctx)
	sub, err := h.b.Subscribe(ctx, pattern, pubsub.Buffer(fanoutBuffer))
	if err != nil {
		cancel()
		return nil, err
	}
	f := &fanout{h: h, pattern: pattern, topic: topic, cancel: cancel}
	if topic {
		f.enc = func(m *pubsub.Message) []byte { return encodeMessage(pattern, m) }
	} else {
		f.enc = func(m *pubsub.Message) []byte { return encodeMessage("", m) }
	}
	f.members.Store(new([]*session))
	h.fans[pattern] = f
	h.wg.Add(1)
	go f.run(ctx, sub)
	return f, nil
}

// frame returns m's encoding for this fan-out, computed once per message
// however many connections (and hubs in this process) send it.
func (f *fanout) frame(m *pubsub.Message) []byte {
	if f.topic {
		return m.Encoded(f, f.enc)
	}
	return m.Encoded(directKey, f.enc)
}

// add and remove change the members; the caller holds h.mu. The fan-out
// ends with its last member.
func (f *fanout) add(s *session) {
	old := *f.members.Load()
	next := make([]*session, len(old), len(old)+1)
	copy(next, old)
	next = append(next, s)
	f.members.Store(&next)
}

func (f *fanout) remove(s *session) {
	old := *f.members.Load()
	i := slices.Index(old, s)
	if i < 0 {
		return
	}
	next := make([]*session, 0, len(old)-1)
	next = append(next, old[:i]...)
	next = append(next, old[i+1:]...)
	f.members.Store(&next)
	if len(next) == 0 {
		delete(f.h.fans, f.pattern)
		f.cancel()
	}
}

func (f *fanout) run(ctx context.Context, sub pubsub.Subscription) {
	defer f.h.wg.Done()
	defer func() { sub.Close() }()
	buf := make([]pubsub.Message, 0, fanBatch)
	frames := make([][]byte, 0, fanBatch)
	var last pubsub.Cursor
	for {
		batch, err := sub.NextBatch(ctx, buf[:0])
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.Is(err, pubsub.ErrGap):
			var g *pubsub.GapError
			errors.As(err, &g)
			name := ""
			if f.topic {
				name = f.pattern
			}
			frame := encodeGap(name, string(g.After), g.Reason)
			for _, s := range *f.members.Load() {
				s.deliverGap(f, frame)
			}
			continue
		case errors.Is(err, pubsub.ErrSlowConsumer):
			sub.Close()
			next, serr := f.h.b.Subscribe(ctx, f.pattern, pubsub.Buffer(fanoutBuffer), pubsub.After(last))
			if serr != nil {
				f.fail()
				return
			}
			sub = next
			continue
		default: // ErrClosed: the broker is gone.
			f.fail()
			return
		}
		frames = frames[:0]
		for i := range batch {
			frames = append(frames, f.frame(&batch[i]))
		}
		last = batch[len(batch)-1].Cursor
		for _, s := range *f.members.Load() {
			s.deliver(f, batch, frames)
		}
		clear(batch)
		clear(frames)
	}
}

// fail closes the members: without their fan-out they would silently miss
// messages. They reconnect and resume by cursor.
func (f *fanout) fail() {
	for _, s := range *f.members.Load() {
		s.closeWith(StatusTryAgainLater, "broker subscription lost")
	}
}

package redisqueue

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/queue"
)

// watch is the local state of one queue's wake-up channel: receivers of
// this backend waiting on the queue hold ch, which is closed (and
// replaced) when a wake-up arrives, when the subscription is confirmed
// (again), and when the subscription's connection was lost.
type watch struct {
	ch chan struct{} // guarded by Backend.mu
}

// watch returns the channel that the next wake-up of the named channel
// closes, subscribing to it first if this backend has not yet. A receiver
// takes it before it looks for messages, so that nothing published after
// the look is missed; a new subscription's confirmation is itself a
// wake-up, so nothing published before it is missed either.
func (b *Backend) watch(ctx context.Context, channel string) (<-chan struct{}, error) {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil, queue.ErrClosed
	}
	if w, ok := b.watches[channel]; ok {
		ch := w.ch
		b.mu.Unlock()
		return ch, nil
	}
	w := &watch{ch: make(chan struct{})}
	b.watches[channel] = w
	if b.ps == nil {
		b.ps = b.client.Subscribe(context.Background())
		ctx, cancel := context.WithCancel(context.Background())
		b.cancel, b.listened = cancel, make(chan struct{})
		go b.listen(ctx, b.listened)
	}
	ps, ch := b.ps, w.ch
	b.mu.Unlock()
	if err := ps.Subscribe(ctx, channel); err != nil {
		// Forget the watch, so that the next wait subscribes again, and
		// wake whoever took it meanwhile. This receiver's script reports
		// the error, if Redis is unreachable.
		b.mu.Lock()
		if b.watches[channel] == w {
			delete(b.watches, channel)
			close(w.ch)
		}
		b.mu.Unlock()
	}
	return ch, nil
}

// wake closes the waiters' channel of one watch, or of all when channel
// is "".
func (b *Backend) wake(channel string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c, w := range b.watches {
		if channel == "" || c == channel {
			close(w.ch)
			w.ch = make(chan struct{})
		}
	}
}

// listen reads the wake-up subscription until ctx ends. go-redis
// reconnects a lost subscription on the next read and subscribes again to
// every channel, whose confirmations wake the waiters; a connection that
// stays silent through a ping is replaced.
func (b *Backend) listen(ctx context.Context, done chan struct{}) {
	defer close(done)
	retry := backoff.NewRetrier(backoff.Policy{Base: b.cfg.ReconnectBase, Max: b.cfg.ReconnectMax}, nil)
	pinged := false
	b.mu.Lock()
	ps := b.ps
	b.mu.Unlock()
	for {
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !pinged {
					pinged = true
					_ = ps.Ping(ctx)
					continue
				}
				if ps = b.replace(ps); ps == nil {
					return
				}
			}
			pinged = false
			// Wake-ups may have been lost: every waiter looks again.
			b.wake("")
			if retry.Next(ctx) != nil {
				return
			}
			continue
		}
		retry.Reset()
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				b.wake(m.Channel)
			}
		case *redis.Message:
			b.wake(m.Channel)
		}
	}
}

// replace closes a subscription whose connection went silent and opens a
// new one to the same channels. It returns nil when the backend is
// closing.
func (b *Backend) replace(old *redis.PubSub) *redis.PubSub {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil
	}
	ps := b.client.Subscribe(context.Background())
	b.ps = ps
	channels := make([]string, 0, len(b.watches))
	for c := range b.watches {
		channels = append(channels, c)
	}
	b.mu.Unlock()
	_ = old.Close()
	if len(channels) > 0 {
		_ = ps.Subscribe(context.Background(), channels...)
	}
	return ps
}

package redispubsub

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/pubsub"
)

// errResync makes the feed check the epoch again at once, without a
// backoff: it met an entry of another epoch.
var errResync = errors.New("redispubsub: epoch changed")

// run is the feed: the node's one reader of the stream, from the relay's
// last position on, into the relay. It reconnects with backoff until Close.
func (b *Broker) run(ctx context.Context) {
	defer close(b.done)
	retry := backoff.NewRetrier(b.cfg.reconnect, nil)
	for {
		err := b.follow(ctx, retry)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errResync) {
			continue
		}
		if retry.Next(ctx) != nil {
			return
		}
	}
}

// follow checks the epoch (resync), then reads the stream after the relay's
// position until an error.
func (b *Broker) follow(ctx context.Context, retry *backoff.Retrier) error {
	if err := b.resync(ctx); err != nil {
		return err
	}
	retry.Reset()
	for {
		streams, err := b.feed.XRead(ctx, &redis.XReadArgs{
			Streams: []string{b.stream, formatID(b.relay.Last())},
			Count:   feedBatch,
			Block:   feedBlock,
		}).Result()
		if errors.Is(err, redis.Nil) {
			// Nothing new within feedBlock. Check the epoch: a stream lost
			// and recreated while this connection stayed up gets entries
			// this XREAD may never see (ids at or before the relay's
			// position, as in the same millisecond or after the clock
			// stepped back).
			if err := b.resync(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		for _, s := range streams {
			if err := b.deliver(ctx, s.Messages); err != nil {
				return err
			}
		}
	}
}

// resync runs after every (re)connection. A new epoch means that Redis lost
// the stream (a restart without persistence, a deleted key): the local
// subscribers get a gap and the feed reads the new stream from its start.
// Trimming while the feed was away needs no check here: deliver sees it in
// the first entry it reads.
func (b *Broker) resync(ctx context.Context) error {
	epoch, err := b.ensure(ctx, b.feed)
	if err != nil {
		return err
	}
	if epoch != b.relay.Epoch() {
		b.relay.Reset(epoch, pubsub.Position{}, "epoch changed: Redis lost the stream")
	}
	return nil
}

// deliver hands a batch read from the stream to the relay, in order. An
// entry whose predecessor comes after the relay's position shows that what
// came between was trimmed before the feed read it (while it was away, or
// lagging): the relay is reset past it, so that local subscribers get a gap
// instead of a hole.
func (b *Broker) deliver(ctx context.Context, xs []redis.XMessage) error {
	for _, x := range xs {
		e, err := decode(x)
		if err != nil {
			b.relay.Progress(e.pos) // not a message of ours: step over it
			continue
		}
		if e.epoch != b.relay.Epoch() {
			current, err := b.ensure(ctx, b.feed)
			if err != nil {
				return err
			}
			if current != b.relay.Epoch() {
				return errResync // Redis lost the stream: resync reports it
			}
			b.relay.Progress(e.pos) // left from an earlier epoch: not ours
			continue
		}
		if last := b.relay.Last(); last.Less(e.prev) {
			b.relay.Reset(e.epoch, e.prev, "trimmed before this node read it")
		}
		if err := b.relay.Deliver(ctx, e.msg); err != nil {
			if ctx.Err() != nil {
				return err
			}
			// The local fan-out refused it (too large for this node, too many
			// topics): its subscribers must not miss it silently.
			b.relay.Reset(e.epoch, e.pos, fmt.Sprintf("message %s not deliverable on this node: %v", x.ID, err))
		}
	}
	return nil
}

package natspubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/pubsub"
)

// The node's feed: one ephemeral push consumer on the whole stream, with
// flow control and idle heartbeats, read by one goroutine into the relay.
// Because the consumer is not filtered, stream sequences arrive without
// holes unless messages are really gone, and the consumer's own delivery
// sequence tells a message the server skipped (trimmed or deleted: a gap
// for local subscribers) from one lost on the way (a restart from the last
// delivered message, losing nothing). The same rule as nats.go's ordered
// consumer, made explicit so that a restart is decided here, with the
// backoff and the gap checks it needs.

// Reasons a consume session ends and the feed starts a new one.
var (
	errMissed      = errors.New("natspubsub: feed missed a message on the way")
	errReconnected = errors.New("natspubsub: connection re-established")
	errNoHeartbeat = errors.New("natspubsub: no heartbeat from the server")
	errDeleted     = errors.New("natspubsub: feed consumer deleted")
)

// run restarts consume, with capped exponential backoff and full jitter,
// until ctx ends or the connection closes for good. A reconnection of the
// client cuts the wait short: the engine is back.
func (b *Broker) run(ctx context.Context) {
	defer close(b.done)
	status := b.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer b.nc.RemoveStatusListener(status)
	attempt := 0
	for {
		progressed, _ := b.consume(ctx, status)
		if ctx.Err() != nil {
			return
		}
		if b.nc.IsClosed() {
			// Nothing can reach the engine again: end the subscriptions
			// (ErrClosed) rather than leave them waiting forever.
			_ = b.relay.Close()
			return
		}
		if progressed {
			attempt = 0
		}
		wait := time.NewTimer(backoffPolicy.Delay(attempt))
		attempt++
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case s := <-status:
			wait.Stop()
			if s == nats.CONNECTED {
				attempt = 0
			}
		case <-wait.C:
		}
	}
}

// consume runs one session: check the stream against the relay (epoch,
// trimming), create the consumer after relay.Last(), and deliver until
// something requires a restart. It reports whether it delivered anything.
func (b *Broker) consume(ctx context.Context, status <-chan nats.Status) (progressed bool, err error) {
	var info *jetstream.StreamInfo
	err = b.call(ctx, status, func(ctx context.Context) (err error) {
		info, err = b.streamInfo(ctx)
		return err
	})
	if err != nil {
		return false, err
	}
	epoch := epochOf(info)
	last := b.relay.Last()
	switch first := firstKept(info); {
	case epoch != b.relay.Epoch():
		b.relay.Reset(epoch, pubsub.Position{Lo: first - 1}, "stream recreated")
	case info.State.LastSeq < last.Lo:
		b.relay.Reset(epoch, pubsub.Position{Lo: info.State.LastSeq}, "stream sequence went back")
	case first-1 > last.Lo:
		b.relay.Reset(epoch, pubsub.Position{Lo: first - 1}, "trimmed")
	}
	last = b.relay.Last()

	msgs := make(chan *nats.Msg, b.opts.FeedBuffer)
	inbox := b.nc.NewInbox()
	sub, err := b.nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return false, err
	}
	defer sub.Unsubscribe()
	var cons jetstream.PushConsumer
	err = b.call(ctx, status, func(ctx context.Context) (err error) {
		cons, err = b.stream.CreateOrUpdatePushConsumer(ctx, jetstream.ConsumerConfig{
			Description:       "switchboard feed",
			DeliverSubject:    inbox,
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       last.Lo + 1,
			AckPolicy:         jetstream.AckNonePolicy,
			FlowControl:       true,
			IdleHeartbeat:     b.opts.Heartbeat,
			MemoryStorage:     true,
			Replicas:          1,
			InactiveThreshold: max(4*b.opts.Heartbeat, b.opts.Timeout),
		})
		return err
	})
	if err != nil {
		return false, err
	}
	defer b.deleteConsumer(cons.CachedInfo().Name)

	ticker := time.NewTicker(b.opts.Heartbeat)
	defer ticker.Stop()
	var delivered uint64 // the consumer's delivery sequence of the last message
	heard, silent := false, 0
	for {
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case s := <-status:
			if s == nats.CLOSED {
				return progressed, nats.ErrConnectionClosed
			}
			// Messages pushed while the connection was down are lost on
			// the way; start again after the last one delivered.
			return progressed, errReconnected
		case <-ticker.C:
			if heard {
				heard, silent = false, 0
				continue
			}
			if silent++; silent >= 2 {
				return progressed, errNoHeartbeat
			}
		case m := <-msgs:
			heard = true
			if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
				if err := b.control(m, delivered); err != nil {
					return progressed, err
				}
				continue
			}
			meta, err := m.Metadata()
			if err != nil {
				return progressed, err
			}
			if meta.Sequence.Consumer != delivered+1 {
				return progressed, errMissed
			}
			delivered = meta.Sequence.Consumer
			seq := meta.Sequence.Stream
			if seq <= last.Lo {
				continue
			}
			if seq > last.Lo+1 {
				// The server skipped them: they are no longer in the stream.
				b.relay.Reset(epoch, pubsub.Position{Lo: seq - 1}, "trimmed")
			}
			msg := b.decode(m.Subject, m.Data, m.Header, epoch, seq, meta.Timestamp)
			if err := b.relay.Deliver(ctx, msg); err != nil {
				if ctx.Err() != nil || errors.Is(err, pubsub.ErrClosed) {
					return progressed, err
				}
				// The local fan-out refused it (a local bound): tell the
				// subscribers rather than leave a silent hole.
				b.relay.Reset(epoch, pubsub.Position{Lo: seq}, "not delivered locally: "+err.Error())
			}
			last.Lo = seq
			progressed = true
		}
	}
}

// control handles a status message of the push consumer: flow control,
// heartbeats (which also say what the server last delivered, so a tail
// lost on the way is noticed), and the consumer's deletion.
func (b *Broker) control(m *nats.Msg, delivered uint64) error {
	switch m.Header.Get("Status") {
	case "100":
		if m.Reply != "" { // a flow control request
			return m.Respond(nil)
		}
		if stalled := m.Header.Get("Nats-Consumer-Stalled"); stalled != "" {
			_ = b.nc.Publish(stalled, nil)
		}
		if v := m.Header.Get("Nats-Last-Consumer"); v != "" {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > delivered {
				return errMissed
			}
		}
		return nil
	case "409":
		return fmt.Errorf("%w: %s", errDeleted, m.Header.Get("Description"))
	}
	return nil
}

// call runs an engine API call bounded by Options.Timeout, and abandons it
// when the connection is re-established meanwhile: a request written to
// the connection that died will never be answered.
func (b *Broker) call(ctx context.Context, status <-chan nats.Status, fn func(context.Context) error) error {
	ctx, cancel := b.timeout(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	select {
	case err := <-errc:
		return err
	case s := <-status:
		cancel()
		<-errc
		if s == nats.CLOSED {
			return nats.ErrConnectionClosed
		}
		return errReconnected
	}
}

// streamInfo reads the stream's state, creating the stream again when it
// is gone (a memory stream after a server restart, say): the new stream
// has a new epoch, and the feed reports the loss.
func (b *Broker) streamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	info, err := b.stream.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = b.js.CreateOrUpdateStream(ctx, b.streamConfig()); err != nil {
			return nil, err
		}
		info, err = b.stream.Info(ctx)
	}
	return info, err
}

package natsqueue

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-go/switchboard/queue"
)

// maxIdleInboxes bounds the pull inboxes a backend keeps subscribed for
// reuse; a pull that finds none idle subscribes a new one.
const maxIdleInboxes = 16

// inbox is a subscription that answers to pulls, one pull at a time: each
// pull publishes its request with the reply subject "<prefix><token>" and
// a new token. JetStream sends the messages of a pull with their own
// subjects and its closing status to the reply subject, so a status with
// another token is a late one for an earlier pull and is ignored. An inbox
// goes back to the idle list only after its pull ended with the server's
// closing status or with every message it asked for, when nothing more can
// come for it; an abandoned pull unsubscribes its inbox instead, which
// also withdraws the request (the server drops a pull request nobody
// listens for).
type inbox struct {
	prefix string
	sub    *nats.Subscription
	ch     chan *nats.Msg // buffered for a whole batch and its status
	seq    uint64         // the last token
}

// takeInbox returns an idle inbox, or subscribes a new one.
func (b *Backend) takeInbox() (*inbox, error) {
	b.pmu.Lock()
	if n := len(b.idle); n > 0 {
		in := b.idle[n-1]
		b.idle = b.idle[:n-1]
		b.pmu.Unlock()
		return in, nil
	}
	b.pmu.Unlock()
	in := &inbox{prefix: nats.NewInbox() + ".", ch: make(chan *nats.Msg, queue.MaxBatch+4)}
	sub, err := b.nc.ChanSubscribe(in.prefix+"*", in.ch)
	if err != nil {
		return nil, b.wrap("pull", err)
	}
	in.sub = sub
	return in, nil
}

// putInbox keeps in for the next pull, or unsubscribes it when the idle
// list is full or the backend closed.
func (b *Backend) putInbox(in *inbox) {
	b.pmu.Lock()
	if !b.closed.Load() && len(b.idle) < maxIdleInboxes {
		b.idle = append(b.idle, in)
		in = nil
	}
	b.pmu.Unlock()
	if in != nil {
		_ = in.sub.Unsubscribe()
	}
}

// dropInboxes unsubscribes the idle inboxes; Close calls it after marking
// the backend closed, so none is put back after.
func (b *Backend) dropInboxes() {
	b.pmu.Lock()
	idle := b.idle
	b.idle = nil
	b.pmu.Unlock()
	for _, in := range idle {
		_ = in.sub.Unsubscribe()
	}
}

// pull asks a consumer for up to n messages: those available now when
// wait is zero, else the first one to come within wait. It returns early
// when ctx ends or the backend closes; the pull is then withdrawn, and a
// message that was already on its way is given back with a nak.
func (b *Backend) pull(ctx context.Context, stream, consumer string, n int, wait time.Duration) ([]*nats.Msg, error) {
	in, err := b.takeInbox()
	if err != nil {
		return nil, err
	}
	in.seq++
	reply := in.prefix + strconv.FormatUint(in.seq, 36)
	req := `{"batch":` + strconv.Itoa(n) + `,"no_wait":true}`
	if wait > 0 {
		req = `{"batch":` + strconv.Itoa(n) + `,"expires":` + strconv.FormatInt(int64(wait), 10) + `}`
	}
	if err := b.nc.PublishRequest(apiNext+stream+"."+consumer, reply, []byte(req)); err != nil {
		_ = in.sub.Unsubscribe()
		return nil, b.wrap("pull", err)
	}
	// The server ends every pull with a status unless it sends all n
	// messages; the timer only covers a request or status lost with the
	// connection.
	t := time.NewTimer(wait + b.opts.Timeout)
	defer t.Stop()
	var out []*nats.Msg
	for {
		select {
		case m := <-in.ch:
			if m.Reply == "" && len(m.Data) == 0 && m.Header.Get("Status") != "" {
				if m.Subject != reply || m.Header.Get("Status") == "100" {
					continue // late, for an earlier pull; or a heartbeat
				}
				b.putInbox(in)
				return out, nil
			}
			out = append(out, m)
			if len(out) == n {
				b.putInbox(in)
				return out, nil
			}
		case <-t.C:
			_ = in.sub.Unsubscribe()
			return out, nil
		case <-ctx.Done():
			b.withdraw(in, out)
			return nil, ctx.Err()
		case <-b.done:
			b.withdraw(in, out)
			return nil, queue.ErrClosed
		}
	}
}

// withdraw ends an abandoned pull and gives back what it had delivered.
func (b *Backend) withdraw(in *inbox, got []*nats.Msg) {
	_ = in.sub.Unsubscribe()
	for {
		select {
		case m := <-in.ch:
			got = append(got, m)
			continue
		default:
		}
		break
	}
	for _, m := range got {
		if m.Reply != "" {
			_ = b.nc.Publish(m.Reply, []byte("-NAK"))
		}
	}
}

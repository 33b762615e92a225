package natsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/batch"
	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
)

// ensureConsumer makes sure the durable pull consumer of q's level exists
// with AckWait lease, and returns its name.
func (b *Backend) ensureConsumer(ctx context.Context, q *qstate, lvl int, lease time.Duration) (string, error) {
	name := consumerName(q, lvl)
	q.mu.Lock()
	aw := q.ackWait[lvl]
	q.mu.Unlock()
	if aw == lease {
		return name, nil
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	_, err := b.work.CreateOrUpdateConsumer(cctx, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: b.workSubject(q, lvl), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: lease, MaxDeliver: -1, MaxAckPending: b.opts.MaxInFlight, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return "", b.wrap("consumer", err)
	}
	q.mu.Lock()
	q.ackWait[lvl] = lease
	q.mu.Unlock()
	return name, nil
}

// Receive implements queue.Backend. Each priority level of a queue has its
// own durable pull consumer whose AckWait is the lease: a Receive asking
// for another lease than the consumer has updates it (one call; use one
// lease per queue). Receive pulls what is visible now from the levels
// that may hold messages, highest first (see occupancy: it reads them
// from the stream at most every Options.Recheck, and again before it
// concludes that the queue is empty), in one pull request per level for
// up to opts.Max messages. When none is visible it waits on the highest
// level that holds messages (or the default level), woken by the server
// at once, and looks again at the other levels every Options.Recheck.
func (b *Backend) Receive(ctx context.Context, name string, opts queue.ReceiveOptions) ([]queue.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := b.queue(name)
	if err != nil {
		return nil, err
	}
	b.startMover(q)
	deadline := time.Now().Add(opts.Wait)
	fresh := false // read the levels from the stream
	for {
		if b.closed.Load() {
			return nil, queue.ErrClosed
		}
		q.mu.Lock()
		paused, changed := q.paused, q.changed
		q.mu.Unlock()
		remaining := time.Until(deadline)
		if paused {
			if remaining <= 0 {
				return nil, nil
			}
			t := time.NewTimer(remaining)
			select {
			case <-changed:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-b.done:
				t.Stop()
				return nil, queue.ErrClosed
			}
			t.Stop()
			continue
		}
		if !b.nc.IsConnected() {
			return nil, ErrUnavailable
		}
		before := q.occAt.Load()
		levels, err := b.occupancy(ctx, q, fresh)
		if err != nil {
			return nil, err
		}
		var out []queue.Delivery
		for _, lvl := range levels {
			if len(out) >= opts.Max {
				break
			}
			ds, err := b.take(ctx, q, lvl, opts.Max-len(out), opts.Lease, 0)
			if err != nil {
				return nil, err
			}
			out = append(out, ds...)
		}
		if len(out) > 0 {
			return out, nil
		}
		if q.occAt.Load() == before && !fresh {
			// Nothing where the levels last read said: read them again
			// before concluding that the queue is empty.
			fresh = true
			continue
		}
		if remaining <= 0 {
			return nil, nil
		}
		lvl := level(0)
		if len(levels) > 0 {
			lvl = levels[0]
		}
		ds, err := b.take(ctx, q, lvl, 1, opts.Lease, min(remaining, b.opts.Recheck))
		if err != nil {
			return nil, err
		}
		if len(ds) > 0 {
			if opts.Max > 1 {
				more, err := b.take(ctx, q, lvl, opts.Max-1, opts.Lease, 0)
				if err == nil {
					ds = append(ds, more...)
				}
			}
			return ds, nil
		}
		fresh = true
	}
}

// take pulls up to n messages of one level and turns them into
// deliveries, dead-lettering those past MaxDeliver.
func (b *Backend) take(ctx context.Context, q *qstate, lvl, n int, lease, wait time.Duration) ([]queue.Delivery, error) {
	cons, err := b.ensureConsumer(ctx, q, lvl, lease)
	if err != nil {
		return nil, err
	}
	msgs, err := b.pull(ctx, b.work.CachedInfo().Config.Name, cons, n, wait)
	if err != nil {
		return nil, err
	}
	// The server started each lease as it sent the message, a moment ago:
	// the local deadline ends a margin early, so that this backend refuses
	// a receipt before the server can deliver its message again.
	sent := time.Now().Add(-leaseMargin(lease))
	out := make([]queue.Delivery, 0, len(msgs))
	for _, m := range msgs {
		l, err := b.delivery(ctx, q, lvl, m, sent, lease)
		if err != nil {
			_ = b.nc.Publish(m.Reply, []byte("+TERM")) // not a message of ours
			continue
		}
		if b.opts.MaxDeliver > 0 && l.d.Attempt > b.opts.MaxDeliver {
			cctx, cancel := b.callCtx(context.WithoutCancel(ctx))
			_ = b.deadLetter(cctx, l, "natsqueue: delivered "+strconv.Itoa(l.d.Attempt-1)+" times without being settled")
			cancel()
			continue
		}
		if l.d.Attempt > 1 {
			q.retried.Add(1)
			q.mu.Lock()
			delete(q.nacked, l.seq)
			q.mu.Unlock()
		}
		b.lmu.Lock()
		b.leases[l.d.Receipt] = l
		b.sweepLocked()
		b.lmu.Unlock()
		out = append(out, l.d)
	}
	return out, nil
}

func leaseMargin(lease time.Duration) time.Duration { return min(lease/10, 20*time.Millisecond) }

// sweepLocked forgets deliveries whose lease has passed, whenever the table
// has doubled since the last sweep. b.lmu is held.
func (b *Backend) sweepLocked() {
	if len(b.leases) < 2*b.sweepSize+1024 {
		return
	}
	now := time.Now()
	for r, l := range b.leases {
		if !now.Before(l.deadline) {
			delete(b.leases, r)
		}
	}
	b.sweepSize = len(b.leases)
}

func (b *Backend) delivery(ctx context.Context, q *qstate, lvl int, m *nats.Msg, sent time.Time, leaseFor time.Duration) (*lease, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	h := m.Header
	d := queue.Delivery{
		ID: h.Get(hID), Body: m.Data, Priority: lvl + queue.MinPriority,
		Attempt: int(md.NumDelivered), LastError: h.Get(hErr), Receipt: queue.Receipt(m.Reply),
		EnqueuedAt: md.Timestamp,
	}
	if d.ID == "" {
		d.ID = "w" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	if md.NumDelivered > 1 {
		cctx, cancel := b.callCtx(context.WithoutCancel(ctx))
		e, err := b.errs.Get(cctx, errKey(q, md.Sequence.Stream))
		cancel()
		if err == nil {
			d.LastError = string(e.Value())
		}
	}
	if v := h.Get(hAtt); v != "" {
		n, _ := strconv.Atoi(v)
		d.Attempt += n
	}
	if v := h.Get(hEnq); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			d.EnqueuedAt = time.Unix(0, n)
		}
	}
	if v := h.Get(hHeader); v != "" {
		_ = json.Unmarshal([]byte(v), &d.Header)
	}
	return &lease{q: q, deadline: sent.Add(leaseFor), ackWait: leaseFor, seq: md.Sequence.Stream, d: d, level: lvl}, nil
}

// held returns the delivery a receipt holds, or ErrStaleReceipt. Receipts
// are held by the backend that received them: another backend (another
// process) refuses them as stale.
func (b *Backend) held(name string, r queue.Receipt, remove bool) (*lease, error) {
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	b.lmu.Lock()
	defer b.lmu.Unlock()
	l, ok := b.leases[r]
	if !ok || l.q.name != name {
		return nil, queue.ErrStaleReceipt
	}
	if !time.Now().Before(l.deadline) {
		delete(b.leases, r)
		return nil, queue.ErrStaleReceipt
	}
	if remove {
		delete(b.leases, r)
	}
	return l, nil
}

// reply sends an acknowledgement of kind to a delivery and waits for the
// server to confirm it.
func (b *Backend) reply(ctx context.Context, r queue.Receipt, kind string) error {
	if err := b.check(); err != nil {
		return err
	}
	var err error
	if _, ok := ctx.Deadline(); !ok && ctx.Done() == nil {
		// A context that cannot end (the Worker settles with one): no
		// need for a derived one per call.
		_, err = b.nc.Request(string(r), []byte(kind), b.opts.Timeout)
	} else {
		cctx, cancel := b.callCtx(ctx)
		_, err = b.nc.RequestWithContext(cctx, string(r), []byte(kind))
		cancel()
	}
	return b.wrap(kind, err)
}

// Ack implements queue.Backend with an acknowledgement the server
// confirms (AckSync): a nil error means that the server has processed the
// ack. Any other error (ErrUnavailable, a timeout, ctx's error) means the
// outcome is unknown: the ack may or may not have reached the server, so
// the message is either deleted or delivered again when its lease ends.
// The receipt stays held until its lease ends, so the call may be
// repeated. Acks from concurrent callers are pipelined on the connection
// (one shared reply subscription), not serialized.
func (b *Backend) Ack(ctx context.Context, name string, r queue.Receipt) error {
	l, err := b.held(name, r, true)
	if err != nil {
		return err
	}
	if err := b.reply(ctx, r, "+ACK"); err != nil {
		b.restore(l)
		return err
	}
	l.q.processed.Add(1)
	return nil
}

// AckBatch implements queue.BatchAcker: every ack asks the server to
// confirm it, as Ack does, but they go out together and their
// confirmations come back on one inbox, so that the batch costs one round
// trip. An ack not confirmed within the backend's Timeout fails as Ack's
// would, its receipt still held.
func (b *Backend) AckBatch(ctx context.Context, name string, rs []queue.Receipt) []error {
	errs := batch.New(len(rs))
	ls := make([]*lease, len(rs))
	sent := 0
	for i, r := range rs {
		l, err := b.held(name, r, true)
		if err != nil {
			errs.Fail(i, err)
			continue
		}
		ls[i] = l
		sent++
	}
	if sent == 0 {
		return errs.List()
	}
	giveBack := func(err error) []error {
		for i, l := range ls {
			if l != nil {
				b.restore(l)
				errs.Fail(i, err)
			}
		}
		return errs.List()
	}
	if err := b.check(); err != nil {
		return giveBack(err)
	}
	in, err := b.takeInbox()
	if err != nil {
		return giveBack(err)
	}
	// The i-th ack's confirmation comes back to the inbox with token
	// base+1+i.
	base := in.seq
	in.seq += uint64(len(rs))
	for i, l := range ls {
		if l == nil {
			continue
		}
		reply := in.prefix + strconv.FormatUint(base+1+uint64(i), 36)
		if err := b.nc.PublishRequest(string(rs[i]), reply, []byte("+ACK")); err != nil {
			_ = in.sub.Unsubscribe() // confirmations of those sent may still come
			return giveBack(b.wrap("+ACK", err))
		}
	}
	t := time.NewTimer(b.opts.Timeout)
	defer t.Stop()
	for confirmed := 0; confirmed < sent; {
		select {
		case m := <-in.ch:
			_, tok, _ := strings.Cut(m.Subject, in.prefix)
			n, perr := strconv.ParseUint(tok, 36, 64)
			i := int(n - base - 1)
			if perr != nil || n <= base || i >= len(ls) || ls[i] == nil {
				continue // late, for an earlier call on this inbox
			}
			ls[i].q.processed.Add(1)
			ls[i] = nil
			confirmed++
		case <-t.C:
			_ = in.sub.Unsubscribe()
			return giveBack(b.wrap("+ACK", nats.ErrTimeout))
		case <-ctx.Done():
			_ = in.sub.Unsubscribe()
			return giveBack(b.wrap("+ACK", ctx.Err()))
		case <-b.done:
			_ = in.sub.Unsubscribe()
			return giveBack(queue.ErrClosed)
		}
	}
	b.putInbox(in)
	return errs.List()
}

// restore puts back a delivery whose settlement failed, so the caller can
// try again while the lease holds.
func (b *Backend) restore(l *lease) {
	b.lmu.Lock()
	b.leases[l.d.Receipt] = l
	b.lmu.Unlock()
}

// Extend implements queue.Backend with InProgress, which restarts the
// consumer's AckWait: the lease is extended by the consumer's AckWait (the
// lease of the Receive), whatever lease is asked for.
func (b *Backend) Extend(ctx context.Context, name string, r queue.Receipt, _ time.Duration) error {
	l, err := b.held(name, r, false)
	if err != nil {
		return err
	}
	sent := time.Now().Add(-leaseMargin(l.ackWait))
	if err := b.reply(ctx, r, "+WPI"); err != nil {
		return err
	}
	b.lmu.Lock()
	l.deadline = sent.Add(l.ackWait)
	b.lmu.Unlock()
	return nil
}

// copyMsg is a new copy of a delivered message, carrying what the original
// carried in headers.
func copyMsg(subject string, d queue.Delivery, attempts int, lastErr string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = d.Body
	m.Header.Set(hID, d.ID)
	m.Header.Set(hEnq, strconv.FormatInt(d.EnqueuedAt.UnixNano(), 10))
	m.Header.Set(hPri, strconv.Itoa(d.Priority))
	if attempts > 0 {
		m.Header.Set(hAtt, strconv.Itoa(attempts))
	}
	if lastErr != "" {
		m.Header.Set(hErr, lastErr)
	}
	if len(d.Header) > 0 {
		hj, _ := json.Marshal(d.Header)
		m.Header.Set(hHeader, string(hj))
	}
	return m
}

// Nack implements queue.Backend with a nak (NakWithDelay when delay is
// positive): the message keeps its place and the server makes it visible
// again when the delay ends, and the next delivery's NumDelivered counts
// the attempt. A nak carries no data, so a non-empty lastErr is first put
// in the namespace's error bucket under the message's stream sequence,
// where the next delivery reads it (kept for Options.ErrorTTL).
func (b *Backend) Nack(ctx context.Context, name string, r queue.Receipt, delay time.Duration, lastErr string) error {
	l, err := b.held(name, r, true)
	if err != nil {
		return err
	}
	if err := b.check(); err != nil {
		b.restore(l)
		return err
	}
	if lastErr != "" || l.d.LastError != "" {
		cctx, cancel := b.callCtx(ctx)
		_, err := b.errs.PutString(cctx, errKey(l.q, l.seq), lastErr)
		cancel()
		if err != nil {
			b.restore(l)
			return b.wrap("nack", err)
		}
	}
	kind := "-NAK"
	if delay > 0 {
		kind = `-NAK {"delay":` + strconv.FormatInt(int64(delay), 10) + `}`
	}
	if err := b.reply(ctx, r, kind); err != nil {
		b.restore(l)
		return err
	}
	l.q.mu.Lock()
	l.q.nacked[l.seq] = time.Now().Add(delay)
	l.q.mu.Unlock()
	l.q.failed.Add(1)
	return nil
}

func errKey(q *qstate, seq uint64) string { return q.tok + "." + strconv.FormatUint(seq, 10) }

func (b *Backend) publishThenAck(ctx context.Context, m *nats.Msg, r queue.Receipt) error {
	if err := b.check(); err != nil {
		return err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	if _, err := b.js.PublishMsg(cctx, m); err != nil {
		return b.wrap("publish", err)
	}
	return b.reply(ctx, r, "+ACK")
}

// DeadLetter implements queue.Backend: the message is stored in the
// dead-letter stream with its attempts and last error, then acked.
func (b *Backend) DeadLetter(ctx context.Context, name string, r queue.Receipt, lastErr string) error {
	l, err := b.held(name, r, true)
	if err != nil {
		return err
	}
	if err := b.deadLetter(ctx, l, lastErr); err != nil {
		b.restore(l)
		return err
	}
	return nil
}

func (b *Backend) deadLetter(ctx context.Context, l *lease, lastErr string) error {
	m := copyMsg(b.deadSubject(l.q), l.d, l.d.Attempt, lastErr)
	m.Header.Set(hMsgID, "x."+strconv.FormatUint(l.seq, 10))
	if err := b.publishThenAck(ctx, m, l.d.Receipt); err != nil {
		return err
	}
	l.q.failed.Add(1)
	return nil
}

// startMover starts, once per queue, the goroutine that moves due delayed
// messages into the work stream.
func (b *Backend) startMover(q *qstate) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.mover || b.closed.Load() {
		return
	}
	q.mover = true
	b.wg.Go(func() { b.move(q) })
}

// move is a queue's delay mover. The delay stream has a pull consumer per
// queue; a delayed message that is not due yet is naked with the time left
// as its delay, so the server hands it back exactly when it is due (no
// polling); a due one is published into the work stream (its Msg-Id names
// the delayed copy, so a move repeated after a crash stores it once) and
// acked. Every backend that receives from a queue runs its mover; they
// share the consumer.
func (b *Backend) move(q *qstate) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	retry := backoff.NewRetrier(backoffPolicy, clock.Real{})
	fail := func() bool { return retry.Next(ctx) != nil }
	name := q.tok
	stream := b.delay.CachedInfo().Config.Name
	for ctx.Err() == nil {
		if !b.nc.IsConnected() {
			if fail() {
				return
			}
			continue
		}
		q.mu.Lock()
		made := q.delayCons
		q.mu.Unlock()
		if !made {
			cctx, c := context.WithTimeout(ctx, b.opts.Timeout)
			_, err := b.delay.CreateOrUpdateConsumer(cctx, jetstream.ConsumerConfig{
				Durable: name, FilterSubject: b.delaySubject(q), AckPolicy: jetstream.AckExplicitPolicy,
				AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: -1,
			})
			c()
			if err != nil {
				if fail() {
					return
				}
				continue
			}
			q.mu.Lock()
			q.delayCons = true
			q.mu.Unlock()
		}
		msgs, err := b.pull(ctx, stream, name, 1, 30*time.Second)
		if err == nil && len(msgs) > 0 {
			more, merr := b.pull(ctx, stream, name, 256, 0)
			msgs, err = append(msgs, more...), merr
		}
		for _, m := range msgs {
			if err := b.moveOne(ctx, q, m); err != nil && ctx.Err() == nil {
				_ = b.nc.Publish(m.Reply, []byte("-NAK"))
			}
		}
		if err != nil {
			if fail() {
				return
			}
			continue
		}
		retry.Reset()
	}
}

func (b *Backend) moveOne(ctx context.Context, q *qstate, m *nats.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return b.nc.Publish(m.Reply, []byte("+TERM"))
	}
	due, _ := strconv.ParseInt(m.Header.Get(hDue), 10, 64)
	if left := time.Until(time.Unix(0, due)); left > 0 {
		return b.nc.Publish(m.Reply, []byte(`-NAK {"delay":`+strconv.FormatInt(int64(left), 10)+`}`))
	}
	pri, _ := strconv.Atoi(m.Header.Get(hPri))
	out := nats.NewMsg(b.workSubject(q, level(pri)))
	out.Data = m.Data
	for k, v := range m.Header {
		switch k {
		case hDue, hPri, hMsgID:
		default:
			out.Header[k] = v
		}
	}
	if out.Header.Get(hID) == "" {
		out.Header.Set(hID, "d"+strconv.FormatUint(md.Sequence.Stream, 10))
	}
	out.Header.Set(hMsgID, "m."+strconv.FormatUint(md.Sequence.Stream, 10))
	cctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	if _, err := b.js.PublishMsg(cctx, out); err != nil {
		return err
	}
	q.published(1 << level(pri))
	_, err = b.nc.RequestWithContext(cctx, m.Reply, []byte("+ACK"))
	return err
}

// ListDead implements queue.Backend. Dead letters are the messages of the
// queue's subject in the dead-letter stream, oldest first; the cursor is
// the stream sequence of the last one returned.
func (b *Backend) ListDead(ctx context.Context, name string, cursor string, limit int) ([]queue.DeadMessage, string, error) {
	var after uint64
	if cursor != "" {
		n, err := strconv.ParseUint(cursor, 10, 64)
		if err != nil {
			return nil, "", &queue.InvalidError{Arg: "cursor", Reason: "not a cursor of this backend"}
		}
		after = n
	}
	q, err := b.queue(name)
	if err != nil {
		return nil, "", err
	}
	if err := b.check(); err != nil {
		return nil, "", err
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	var out []queue.DeadMessage
	seq := after + 1
	for len(out) <= limit {
		m, err := b.dead.GetMsg(cctx, seq, jetstream.WithGetMsgSubject(b.deadSubject(q)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, "", nil
		}
		if err != nil {
			return nil, "", b.wrap("list dead", err)
		}
		if len(out) == limit {
			return out, strconv.FormatUint(seq-1, 10), nil
		}
		out = append(out, deadMessage(m))
		seq = m.Sequence + 1
	}
	return out, "", nil
}

func deadMessage(m *jetstream.RawStreamMsg) queue.DeadMessage {
	h := m.Header
	dm := queue.DeadMessage{ID: h.Get(hID), Body: m.Data, DeadAt: m.Time, LastError: h.Get(hErr)}
	dm.Priority, _ = strconv.Atoi(h.Get(hPri))
	dm.Attempts, _ = strconv.Atoi(h.Get(hAtt))
	if n, err := strconv.ParseInt(h.Get(hEnq), 10, 64); err == nil {
		dm.EnqueuedAt = time.Unix(0, n)
	}
	if v := h.Get(hHeader); v != "" {
		_ = json.Unmarshal([]byte(v), &dm.Header)
	}
	return dm
}

// Redrive implements queue.Backend: each dead letter is published into the
// work stream (its Msg-Id names the dead letter, so a retried Redrive
// stores it once), then deleted from the dead-letter stream.
func (b *Backend) Redrive(ctx context.Context, name string, ids []string) (int, error) {
	q, err := b.queue(name)
	if err != nil {
		return 0, err
	}
	if err := b.check(); err != nil {
		return 0, err
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	cctx, cancel := b.callCtx(ctx)
	defer cancel()
	moved := 0
	for seq := uint64(1); ; {
		m, err := b.dead.GetMsg(cctx, seq, jetstream.WithGetMsgSubject(b.deadSubject(q)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, nil
		}
		if err != nil {
			return moved, b.wrap("redrive", err)
		}
		seq = m.Sequence + 1
		dm := deadMessage(m)
		if len(want) > 0 && !want[dm.ID] {
			continue
		}
		d := queue.Delivery{ID: dm.ID, Body: dm.Body, Header: dm.Header, Priority: dm.Priority, EnqueuedAt: dm.EnqueuedAt}
		out := copyMsg(b.workSubject(q, level(dm.Priority)), d, 0, dm.LastError)
		out.Header.Set(hMsgID, "r."+strconv.FormatUint(m.Sequence, 10))
		if _, err := b.js.PublishMsg(cctx, out); err != nil {
			return moved, b.wrap("redrive", err)
		}
		q.published(1 << level(dm.Priority))
		if err := b.dead.DeleteMsg(cctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, b.wrap("redrive", err)
		}
		moved++
	}
}

// PrefetchPerHandler implements queue.PrefetchAdvisor: a pull of many
// messages costs about one round trip, so a Worker may keep many waiting.
func (b *Backend) PrefetchPerHandler() int { return 50 }

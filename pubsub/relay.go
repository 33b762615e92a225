package pubsub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// HistoryFunc reads an engine's retained history for a Relay: the messages
// of topics matching pattern whose positions are after `after`, in engine
// order, at most limit of them. Every message must carry its
// Cursor. When the engine no longer retains everything after `after` (it was
// trimmed or expired), HistoryFunc returns an error for which
// errors.Is(err, ErrGap) is true, and no messages. A zero after means "from
// the oldest retained message", which is never a gap.
type HistoryFunc func(ctx context.Context, pattern string, after Position, limit int) ([]Message, error)

// Relay is the local half of an engine-backed broker, for the authors of
// backends. The backend reads one ordered feed from its engine per node (a
// Redis stream, a JetStream consumer, a PostgreSQL table) and hands each
// message to Deliver; the Relay fans it out to any number of local
// subscriptions with the memory Broker's machinery, so ten thousand local
// subscribers cost one engine subscription.
//
// A subscription After a cursor reads the engine's history through the
// HistoryFunc, then joins the live feed with no gap and no duplicate. With a
// HeadFunc, Subscribe first lets the feed catch up with the engine's head
// (waiting at most RelayConfig.CatchUp), opens the live subscription, and
// replays history up to where the feed then was: live messages come after
// it. A feed that still lags, or that Reset past messages the replay
// covered, changes nothing for such a subscription: live messages the
// replay already gave are dropped as the replay advances.
//
// Deliver and Progress must be called from one goroutine at a time, in
// engine order. Everything else is safe for concurrent use.
type Relay struct {
	local   *Broker
	history HistoryFunc
	head    HeadFunc
	catchUp time.Duration

	mu       sync.Mutex    // held across Deliver, so Subscribe sees a consistent last
	epoch    string        // guarded by mu
	last     Position      // the feed's position: everything up to it was delivered; guarded by mu
	waiting  int           // Subscribe calls waiting for the feed; guarded by mu
	advanced chan struct{} // closed when last moves while someone waits; guarded by mu
}

// HeadFunc returns the position of the engine's newest message (zero when
// it has none).
type HeadFunc func(ctx context.Context) (Position, error)

// DefaultCatchUp bounds how long Subscribe waits for the feed to reach the
// engine's head.
const DefaultCatchUp = 5 * time.Second

// RelayConfig configures NewRelay.
type RelayConfig struct {
	// Epoch is the engine's epoch, the one its cursors carry. Required.
	Epoch string
	// Start is the position the feed starts after: usually the engine's
	// newest position when the backend starts reading.
	Start Position
	// History reads engine history. Required.
	History HistoryFunc
	// Head, if set, makes a subscription begin exactly at the engine's
	// newest message when Subscribe is called (and ResumeFromNow after a
	// gap), whatever the feed's lag: one engine round trip per Subscribe.
	// Nil: a subscription begins where the feed is, so messages published
	// just before Subscribe that the feed had not yet delivered arrive too.
	Head HeadFunc
	// CatchUp bounds how long Subscribe waits for the feed to reach the
	// head. Past it the subscription opens anyway, and stays correct. Zero
	// means DefaultCatchUp.
	CatchUp time.Duration
	// Options are the memory Broker's options for the local fan-out.
	// History is ignored (the engine keeps history) and so is
	// MaxMessageSize (the engine accepted the message: the relay delivers
	// it); MaxTopics bounds the topics the relay tracks locally.
	Options []Option
}

// NewRelay returns a relay for one engine feed. Close it when done.
func NewRelay(cfg RelayConfig) *Relay {
	local := NewBroker(append(cfg.Options, History(0, 0))...)
	local.relay = true
	if cfg.CatchUp <= 0 {
		cfg.CatchUp = DefaultCatchUp
	}
	return &Relay{local: local, history: cfg.History, head: cfg.Head, catchUp: cfg.CatchUp, epoch: cfg.Epoch, last: cfg.Start}
}

// Epoch returns the engine epoch the relay currently trusts.
func (r *Relay) Epoch() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch
}

// Head returns the cursor of the engine's newest message, through the
// HeadFunc, or where the feed is when there is none (see HeadReader).
func (r *Relay) Head(ctx context.Context) (Cursor, error) {
	var head Position
	if r.head != nil {
		var err error
		if head, err = r.head(ctx); err != nil {
			return "", fmt.Errorf("pubsub: reading the engine's head: %w", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return MakeCursor(r.epoch, maxPos(head, r.last)), nil
}

// Last returns the feed's position: the last message delivered, or what
// Progress or Reset last declared. A backend whose feed was cut resumes
// reading the engine after it.
func (r *Relay) Last() Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Deliver fans m out to the local subscriptions that match m.Topic. m.Cursor
// must be set, carry the relay's epoch, and come after every message
// delivered before it (one already delivered is ignored, so a feed that
// resumed may re-read); m.ID and m.Time are kept when set. Deliver waits
// only for local subscriptions that chose the Block policy, up to their
// timeout or the end of ctx.
func (r *Relay) Deliver(ctx context.Context, m Message) error {
	epoch, pos, err := m.Cursor.Parse()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if epoch != r.epoch {
		return fmt.Errorf("pubsub: relay: message of epoch %q, relay has %q", epoch, r.epoch)
	}
	if !r.last.Less(pos) {
		return nil
	}
	if _, err := r.local.Publish(ctx, m); err != nil {
		return err
	}
	r.advance(pos)
	return nil
}

// Progress declares that the feed has seen everything up to pos, for a
// feed that is filtered at the engine and so may pass positions without a
// message to deliver.
func (r *Relay) Progress(pos Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.Less(pos) {
		r.advance(pos)
	}
}

// advance moves last and wakes waiting Subscribe calls. Called with mu held.
func (r *Relay) advance(pos Position) {
	r.last = pos
	if r.waiting > 0 {
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
}

// waitFor waits until the feed reaches pos, the catch-up bound passes, or
// ctx ends.
func (r *Relay) waitFor(ctx context.Context, pos Position) error {
	var timeout <-chan time.Time
	for {
		r.mu.Lock()
		if !r.last.Less(pos) {
			r.mu.Unlock()
			return nil
		}
		if r.advanced == nil {
			r.advanced = make(chan struct{})
		}
		ch := r.advanced
		r.waiting++
		r.mu.Unlock()
		if timeout == nil {
			t := r.local.clock.NewTimer(r.catchUp)
			defer t.Stop()
			timeout = t.C()
		}
		var err error
		select {
		case <-ch:
		case <-timeout:
			err = errCatchUp
		case <-ctx.Done():
			err = ctx.Err()
		case <-r.local.done:
			err = ErrClosed
		}
		r.mu.Lock()
		r.waiting--
		r.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

var errCatchUp = errors.New("pubsub: relay feed did not catch up")

// Reset tells the relay that the engine's history was lost (a new epoch, or
// the feed could not resume from Last because history was trimmed). Every
// open subscription reports ErrGap once, then continues with what is
// delivered after start; a subscription whose replay already covered up to
// start ignores it.
func (r *Relay) Reset(epoch string, start Position, reason string) {
	r.mu.Lock()
	r.epoch = epoch
	r.advance(start)
	r.mu.Unlock()
	r.local.signalGap(&GapError{Reason: reason, through: start})
}

// Stats returns the counters of local delivery.
func (r *Relay) Stats() Stats { return r.local.Stats() }

// Close ends every local subscription. It does not touch the engine.
func (r *Relay) Close() error { return r.local.Close() }

// Subscribe opens a local subscription, as Subscriber. With After or
// FromOldest it replays engine history first.
func (r *Relay) Subscribe(ctx context.Context, pattern string, opts ...SubscribeOption) (Subscription, error) {
	if err := ValidatePattern(pattern); err != nil {
		return nil, err
	}
	cfg := NewSubscribeConfig(opts...)
	liveOpts := []SubscribeOption{Buffer(cfg.Buffer), Overflow(cfg.Overflow), BlockTimeout(cfg.BlockTimeout)}
	replay := cfg.After != "" || cfg.FromOldest
	if !replay && r.head == nil {
		return r.local.Subscribe(ctx, pattern, liveOpts...)
	}
	var after Position
	var gap *GapError
	if cfg.After != "" {
		epoch, pos, err := cfg.After.Parse()
		if err != nil {
			return nil, err
		}
		if epoch != r.Epoch() {
			gap = &GapError{After: cfg.After, Reason: "epoch"}
		} else {
			after = pos
		}
	}
	var head Position
	if r.head != nil {
		var err error
		if head, err = r.head(ctx); err != nil {
			return nil, fmt.Errorf("pubsub: reading the engine's head: %w", err)
		}
		if err := r.waitFor(ctx, head); err != nil && !errors.Is(err, errCatchUp) {
			return nil, err
		}
	}
	r.mu.Lock()
	live, err := r.local.Subscribe(ctx, pattern, liveOpts...)
	now := maxPos(head, r.last)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	j := &joinSub{live: live, history: r.history, pattern: pattern, cfg: cfg,
		after: after, upTo: now, now: now, skipTo: after, scratch: make([]Message, 0, 64)}
	switch {
	case !replay || (gap != nil && cfg.OnGap == ResumeFromNow):
		j.gap, j.replayed, j.skipTo = gap, true, now
	case gap != nil:
		j.gap, j.after = gap, Position{}
	case cfg.FromOldest && cfg.After == "":
		j.after, j.fromOldest = Position{}, true
	}
	return j, nil
}

func maxPos(a, b Position) Position {
	if a.Less(b) {
		return b
	}
	return a
}

// joinSub replays engine history up to the handoff position, then reads
// the live local subscription, skipping what the replay already gave.
type joinSub struct {
	live    Subscription
	history HistoryFunc
	pattern string
	cfg     SubscribeConfig

	mu         sync.Mutex // one reader at a time; guards what follows
	gap        *GapError  // to report next
	after      Position   // replay continues after this
	upTo       Position   // replay ends here; live messages after it are new
	fromOldest bool       // the first page starts at the oldest message: no gap check
	replayed   bool       // history done, reading live
	checked    bool       // the first history page was read (gap checked)
	skipTo     Position   // live messages at or before this were replayed
	caughtUp   bool       // a live message past skipTo was seen: stop checking
	exhausted  bool       // no more history to read: the last page was short, or live begins
	held       []Message  // live messages after the replay position, taken early by meetLive
	scratch    []Message  // meetLive's buffer
	heldErr    error      // an error the live subscription returned to meetLive
	now        Position   // where "now" was when the subscription opened
	page       []Message  // history read but not yet delivered
}

var _ Subscription = (*joinSub)(nil)

func (j *joinSub) Next(ctx context.Context) (Message, error) {
	var one [1]Message
	got, err := j.NextBatch(ctx, one[:0])
	if err != nil {
		return Message{}, err
	}
	return got[0], nil
}

func (j *joinSub) NextBatch(ctx context.Context, buf []Message) ([]Message, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if g := j.gap; g != nil {
		j.gap = nil
		return buf, g
	}
	limit := max(cap(buf), len(buf)+1)
	if !j.replayed {
		for len(j.page) == 0 && !j.exhausted {
			if err := ctx.Err(); err != nil {
				return buf, err // no history read for a drain that must not wait
			}
			if err := j.fetch(ctx, limit-len(buf)); err != nil {
				return buf, err
			}
			if g := j.gap; g != nil {
				j.gap = nil
				return buf, g
			}
			if j.replayed { // a gap with ResumeFromNow ended the replay
				break
			}
			j.meetLive()
		}
		if len(j.page) > 0 {
			n := min(len(j.page), limit-len(buf))
			if _, pos, err := j.page[n-1].Cursor.Parse(); err == nil {
				j.skipTo = maxPos(j.skipTo, pos)
			}
			buf = append(buf, j.page[:n]...)
			clear(j.page[:n])
			j.page = j.page[n:]
			return buf, nil
		}
		j.replayed = true
	}
	for {
		n := len(buf)
		var out []Message
		var err error
		switch {
		case len(j.held) > 0:
			k := min(len(j.held), limit-len(buf))
			out = append(buf, j.held[:k]...)
			clear(j.held[:k])
			j.held = j.held[k:]
		case j.heldErr != nil:
			err, j.heldErr = j.heldErr, nil
			out = buf
		default:
			out, err = j.live.NextBatch(ctx, buf)
		}
		if err != nil && j.coveredGap(err) {
			continue // the feed skipped only what the history gave us
		}
		if err != nil || j.caughtUp {
			return out, err
		}
		// Drop what the replay already delivered.
		kept := out[:n]
		for _, m := range out[n:] {
			if !j.caughtUp {
				if _, pos, err := m.Cursor.Parse(); err == nil && !j.skipTo.Less(pos) {
					continue
				}
				j.caughtUp = true
			}
			kept = append(kept, m)
		}
		clear(out[len(kept):])
		if len(kept) > n {
			return kept, nil
		}
		buf = kept
	}
}

// coveredGap reports whether err is a relay reset whose lost messages the
// replay already delivered.
func (j *joinSub) coveredGap(err error) bool {
	var g *GapError
	return errors.As(err, &g) && g.through != (Position{}) && !j.skipTo.Less(g.through)
}

// meetLive drops from the live subscription, without waiting, what the
// replay already covers (a feed that lagged behind the engine delivers
// messages at or before the replay position), so that duplicates never fill
// the live buffer while the replay goes on. It keeps the first newer live
// message, or the error the live subscription reported. Called with mu held,
// after a fetch.
func (j *joinSub) meetLive() {
	for len(j.held) == 0 && j.heldErr == nil {
		out, err := Drain(j.live, j.scratch[:0])
		if err != nil {
			var g *GapError
			switch {
			case errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed):
				return // nothing waiting
			case errors.As(err, &g) && g.through != (Position{}) && !j.after.Less(g.through):
				continue // the feed skipped only what the replay covers
			}
			j.heldErr = err
			return
		}
		for i, m := range out {
			if _, pos, err := m.Cursor.Parse(); err == nil && !j.after.Less(pos) {
				continue // covered by the replay
			}
			j.held = append(j.held, out[i:]...)
			break
		}
		clear(out)
		j.scratch = out[:0]
	}
}

// fetch reads the next page of history. Called with mu held.
func (j *joinSub) fetch(ctx context.Context, limit int) error {
	if !j.after.Less(j.upTo) {
		j.exhausted = true // nothing was published between the cursor and now
		return nil
	}
	limit = min(max(limit, 64), 1024)
	msgs, err := j.history(ctx, j.pattern, j.after, limit)
	j.checked = true
	if err != nil {
		// A gap on the first page: the cursor is older than history. On a
		// later page: retention moved past the replay while it ran. Either
		// way what follows is gone; say so and go on as OnGap chose.
		if errors.Is(err, ErrGap) && !j.fromOldest {
			g := &GapError{After: j.cfg.After, Reason: "trimmed"}
			var ge *GapError
			if errors.As(err, &ge) && ge.Reason != "" {
				g.Reason = ge.Reason
			}
			j.gap = g
			if j.cfg.OnGap == ResumeFromNow {
				j.replayed = true
				j.skipTo = maxPos(j.skipTo, j.now)
			} else {
				j.after, j.fromOldest, j.checked = Position{}, true, false
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // the caller gave up; the subscription goes on
		}
		j.live.Close()
		return fmt.Errorf("pubsub: reading history: %w", err)
	}
	for _, m := range msgs {
		_, pos, err := m.Cursor.Parse()
		if err != nil {
			j.live.Close()
			return fmt.Errorf("pubsub: history message without a valid cursor: %w", err)
		}
		if !j.after.Less(pos) {
			continue // not after the cursor: a HistoryFunc that overlaps
		}
		if j.upTo.Less(pos) {
			j.exhausted = true // the live subscription has the rest
			break
		}
		j.after = pos
		j.page = append(j.page, m)
	}
	if len(msgs) < limit || !j.after.Less(j.upTo) {
		j.exhausted = true
	}
	return nil
}

func (j *joinSub) Close() error { return j.live.Close() }

// Dropped reports what the live subscription's overflow policy discarded.
func (j *joinSub) Dropped() uint64 {
	if d, ok := j.live.(interface{ Dropped() uint64 }); ok {
		return d.Dropped()
	}
	return 0
}

package queue

import (
	"context"
	"time"

	"github.com/switchboard-go/switchboard/internal/batch"
)

// Queue is the portable handle on one named queue of a Backend: what
// producers and consumers call. It checks every argument against the
// package's bounds, fills defaults, and passes the call on. A Queue is
// safe for concurrent use; it holds no resources of its own (close the
// Backend).
type Queue struct {
	b    Backend
	name string
}

// New returns the handle on the queue called name in b. A name is 1 to
// MaxNameLen bytes of letters, digits, '.', '_' and '-'; another returns an
// *InvalidError.
func New(b Backend, name string) (*Queue, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	return &Queue{b: b, name: name}, nil
}

// ValidateName reports whether name can name a queue: 1 to MaxNameLen bytes
// of ASCII letters, digits, '.', '_' and '-'. The set is what every engine
// accepts in a key, a subject token or a column without quoting.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return invalid("name", "a queue name is 1 to %d bytes", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalid("name", "%q: only letters, digits, '.', '_' and '-'", name)
		}
	}
	return nil
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Backend returns the backend the queue lives in.
func (q *Queue) Backend() Backend { return q.b }

// Enqueue stores one message and returns its id.
func (q *Queue) Enqueue(ctx context.Context, m Message) (EnqueueResult, error) {
	if err := checkMessage(m); err != nil {
		return EnqueueResult{}, err
	}
	res, err := q.b.Enqueue(ctx, q.name, []Message{m})
	if err != nil {
		return EnqueueResult{}, err
	}
	return res[0], nil
}

// EnqueueBatch stores up to MaxBatch messages, all or none, and returns
// their ids in order.
func (q *Queue) EnqueueBatch(ctx context.Context, msgs []Message) ([]EnqueueResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if len(msgs) > MaxBatch {
		return nil, invalid("batch", "%d messages, more than %d", len(msgs), MaxBatch)
	}
	for _, m := range msgs {
		if err := checkMessage(m); err != nil {
			return nil, err
		}
	}
	return q.b.Enqueue(ctx, q.name, msgs)
}

func checkMessage(m Message) error {
	switch {
	case m.Delay < 0 || m.Delay > MaxDelay:
		return invalid("delay", "%v is outside [0, %v]", m.Delay, MaxDelay)
	case m.Delay != 0 && !m.RunAt.IsZero():
		return invalid("delay", "set Delay or RunAt, not both")
	case m.Priority < MinPriority || m.Priority > MaxPriority:
		return invalid("priority", "%d is outside [%d, %d]", m.Priority, MinPriority, MaxPriority)
	case len(m.DedupKey) > MaxDedupKeyLen:
		return invalid("dedup key", "longer than %d bytes", MaxDedupKeyLen)
	case len(m.Header) > MaxHeaders:
		return invalid("header", "%d entries, more than %d", len(m.Header), MaxHeaders)
	}
	if _, ok := m.Header[""]; ok {
		return invalid("header", "empty key")
	}
	return nil
}

// Receive leases up to opts.Max messages, waiting up to opts.Wait for the
// first; see Backend.Receive. Zero fields take their defaults.
func (q *Queue) Receive(ctx context.Context, opts ReceiveOptions) ([]Delivery, error) {
	if err := checkReceive(&opts); err != nil {
		return nil, err
	}
	return q.b.Receive(ctx, q.name, opts)
}

// ReceiveAppend is Receive, appending the deliveries to dst and returning
// the extended slice: a consumer that passes its last batch's slice, cut
// to zero length, allocates no slice per batch. The deliveries it
// appended before are not touched.
func (q *Queue) ReceiveAppend(ctx context.Context, dst []Delivery, opts ReceiveOptions) ([]Delivery, error) {
	if err := checkReceive(&opts); err != nil {
		return dst, err
	}
	if ra, ok := q.b.(ReceiveAppender); ok {
		return ra.ReceiveAppend(ctx, q.name, dst, opts)
	}
	ds, err := q.b.Receive(ctx, q.name, opts)
	return append(dst, ds...), err
}

// checkReceive fills the defaults of opts and checks its bounds.
func checkReceive(opts *ReceiveOptions) error {
	if opts.Max == 0 {
		opts.Max = 1
	}
	if opts.Lease == 0 {
		opts.Lease = DefaultLease
	}
	switch {
	case opts.Max < 1 || opts.Max > MaxBatch:
		return invalid("max", "%d is outside [1, %d]", opts.Max, MaxBatch)
	case opts.Lease < MinLease || opts.Lease > MaxLease:
		return invalid("lease", "%v is outside [%v, %v]", opts.Lease, MinLease, MaxLease)
	case opts.Wait < 0 || opts.Wait > MaxWait:
		return invalid("wait", "%v is outside [0, %v]", opts.Wait, MaxWait)
	}
	return nil
}

func checkReceipt(r Receipt) error {
	if r == "" {
		return invalid("receipt", "empty")
	}
	return nil
}

// Extend makes the lease of a delivery end lease from now.
func (q *Queue) Extend(ctx context.Context, r Receipt, lease time.Duration) error {
	if err := checkReceipt(r); err != nil {
		return err
	}
	if lease < MinLease || lease > MaxLease {
		return invalid("lease", "%v is outside [%v, %v]", lease, MinLease, MaxLease)
	}
	return q.b.Extend(ctx, q.name, r, lease)
}

// Ack deletes a processed message.
func (q *Queue) Ack(ctx context.Context, r Receipt) error {
	if err := checkReceipt(r); err != nil {
		return err
	}
	return q.b.Ack(ctx, q.name, r)
}

// AckBatch deletes up to MaxBatch processed messages, in one call to the
// backend when it is a BatchAcker. It returns nil when every ack held,
// otherwise a *BatchError whose Errs line up with receipts.
func (q *Queue) AckBatch(ctx context.Context, receipts ...Receipt) error {
	if len(receipts) > MaxBatch {
		return invalid("receipts", "%d receipts, more than %d", len(receipts), MaxBatch)
	}
	for _, r := range receipts {
		if err := checkReceipt(r); err != nil {
			return err
		}
	}
	var errs []error
	if ba, ok := q.b.(BatchAcker); ok {
		errs = ba.AckBatch(ctx, q.name, receipts)
	} else {
		e := batch.New(len(receipts))
		for i, r := range receipts {
			if err := q.b.Ack(ctx, q.name, r); err != nil {
				e.Fail(i, err)
			}
		}
		errs = e.List()
	}
	if errs == nil {
		return nil
	}
	return &BatchError{Errs: errs}
}

// Nack gives a message back, visible again after delay, recording why
// (lastErr is cut to MaxErrorLen bytes).
func (q *Queue) Nack(ctx context.Context, r Receipt, delay time.Duration, lastErr string) error {
	if err := checkReceipt(r); err != nil {
		return err
	}
	if delay < 0 || delay > MaxDelay {
		return invalid("delay", "%v is outside [0, %v]", delay, MaxDelay)
	}
	return q.b.Nack(ctx, q.name, r, delay, cut(lastErr))
}

// DeadLetter moves a message to the dead-letter queue, recording why
// (lastErr is cut to MaxErrorLen bytes).
func (q *Queue) DeadLetter(ctx context.Context, r Receipt, lastErr string) error {
	if err := checkReceipt(r); err != nil {
		return err
	}
	return q.b.DeadLetter(ctx, q.name, r, cut(lastErr))
}

func cut(s string) string {
	if len(s) > MaxErrorLen {
		return s[:MaxErrorLen]
	}
	return s
}

// Dead lists up to limit dead letters (in [1, MaxBatch]; zero means 100)
// after cursor ("" for the first page), and the cursor of the next page
// ("" at the end).
func (q *Queue) Dead(ctx context.Context, cursor string, limit int) ([]DeadMessage, string, error) {
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > MaxBatch {
		return nil, "", invalid("limit", "%d is outside [1, %d]", limit, MaxBatch)
	}
	return q.b.ListDead(ctx, q.name, cursor, limit)
}

// Redrive moves the named dead letters (at most MaxBatch ids) back into the
// queue, or every dead letter when ids is empty. It reports how many moved.
func (q *Queue) Redrive(ctx context.Context, ids ...string) (int, error) {
	if len(ids) > MaxBatch {
		return 0, invalid("ids", "%d ids, more than %d", len(ids), MaxBatch)
	}
	return q.b.Redrive(ctx, q.name, ids)
}

// Pause stops deliveries; enqueues still succeed.
func (q *Queue) Pause(ctx context.Context) error { return q.b.Pause(ctx, q.name) }

// Resume starts deliveries again.
func (q *Queue) Resume(ctx context.Context) error { return q.b.Resume(ctx, q.name) }

// Stats returns a snapshot of the queue.
func (q *Queue) Stats(ctx context.Context) (Stats, error) { return q.b.Stats(ctx, q.name) }

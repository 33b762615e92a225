package queue

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Bounds that the portable layer (Queue) checks before a backend sees a
// call, so that every backend gets the same clean input.
const (
	// MaxNameLen bounds a queue name.
	MaxNameLen = 128
	// MaxBatch bounds the messages of one EnqueueBatch and of one Receive.
	MaxBatch = 1000
	// MaxDelay bounds a message's delay (or how far ahead RunAt is) and a
	// Nack's delay.
	MaxDelay = 30 * 24 * time.Hour
	// MinLease and MaxLease bound a lease (visibility timeout).
	MinLease = time.Millisecond
	MaxLease = 12 * time.Hour
	// MaxWait bounds how long a Receive waits for a message.
	MaxWait = 5 * time.Minute
	// MinPriority and MaxPriority bound Message.Priority. The range is
	// small on purpose: engines without native priorities (JetStream) keep
	// one subject per level.
	MinPriority = -10
	MaxPriority = 10
	// MaxHeaders bounds the entries of Message.Header.
	MaxHeaders = 64
	// MaxDedupKeyLen bounds Message.DedupKey.
	MaxDedupKeyLen = 128
	// MaxErrorLen bounds the last error a Nack or DeadLetter records;
	// longer texts are cut, not refused.
	MaxErrorLen = 4096
)

// Defaults of ReceiveOptions.
const (
	DefaultLease = 30 * time.Second
)

// Errors returned by queues and backends. Test for them with errors.Is.
var (
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("queue: closed")
	// ErrStaleReceipt: the receipt no longer holds its message, because the
	// lease passed, the message was delivered again, or it was already
	// acked, nacked or dead-lettered. The message may be with another
	// consumer: do not assume the work is undone, and do not retry the call.
	ErrStaleReceipt = errors.New("queue: stale receipt")
	// ErrInvalid: an argument is out of its documented bounds. The error is
	// an *InvalidError naming the argument.
	ErrInvalid = errors.New("queue: invalid argument")
	// ErrTooLarge: a message is larger than the backend accepts.
	ErrTooLarge = errors.New("queue: message too large")
	// ErrQueueFull: the queue holds as many messages as its backend allows;
	// enqueue again later.
	ErrQueueFull = errors.New("queue: queue full")
	// ErrTooManyQueues: the backend already holds as many queues as it
	// allows.
	ErrTooManyQueues = errors.New("queue: too many queues")
)

// InvalidError says which argument was out of bounds and why.
// errors.Is(err, ErrInvalid) reports true for it.
type InvalidError struct {
	Arg    string // "name", "max", "lease", "delay", "receipt", ...
	Reason string
}

func (e *InvalidError) Error() string { return "queue: invalid " + e.Arg + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(arg, format string, a ...any) error {
	return &InvalidError{Arg: arg, Reason: fmt.Sprintf(format, a...)}
}

// Message is what a producer enqueues: a body and how to deliver it.
type Message struct {
	// Body is the payload. The backend keeps it; do not modify it after
	// Enqueue.
	Body []byte
	// Header carries metadata to the consumer. May be nil; at most
	// MaxHeaders entries, keys non-empty.
	Header map[string]string
	// Delay keeps the message invisible for this long after it is
	// enqueued. At most MaxDelay. Zero means visible at once.
	Delay time.Duration
	// RunAt, if not zero, keeps the message invisible until then, on the
	// backend's clock; a time in the past means at once. Setting both
	// Delay and RunAt is invalid.
	RunAt time.Time
	// DedupKey, if not empty, makes the backend drop a later message with
	// the same key enqueued within the backend's deduplication window
	// (counted from the first): Enqueue then reports the first message's
	// id with Duplicate set. At most MaxDedupKeyLen bytes.
	DedupKey string
	// Priority orders visible messages: higher first, then first in first
	// out within a priority. In [MinPriority, MaxPriority]; default 0.
	Priority int
}

// EnqueueResult is what Enqueue reports for one message.
type EnqueueResult struct {
	// ID is the message's id, assigned by the backend (for a duplicate,
	// the id of the message it duplicates).
	ID string `json:"id"`
	// Duplicate reports that the message was dropped as a duplicate of ID.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Receipt is the opaque proof of one delivery of a message, returned by
// Receive and taken by Ack, Nack, Extend and DeadLetter. It is valid while
// the lease of that delivery holds; afterwards those calls fail with
// ErrStaleReceipt. Receipts are safe to hand to clients of the HTTP adapter.
type Receipt string

// Delivery is one delivery of a message to a consumer.
type Delivery struct {
	// ID identifies the message across deliveries.
	ID string
	// Body and Header are the message's. Do not modify them.
	Body   []byte
	Header map[string]string
	// Priority is the message's priority.
	Priority int
	// Attempt counts deliveries of the message, this one included: 1 the
	// first time, 2 after a nack or an expired lease, and so on. Redrive
	// from the dead-letter queue starts it again at 1.
	Attempt int
	// EnqueuedAt is when the message was first enqueued.
	EnqueuedAt time.Time
	// LastError is the error recorded by the last Nack, if any.
	LastError string
	// Receipt proves this delivery; pass it to Ack, Nack, Extend or
	// DeadLetter.
	Receipt Receipt
}

// ReceiveOptions says how many messages to take, for how long, and how long
// to wait for them.
type ReceiveOptions struct {
	// Max is the most messages to return, in [1, MaxBatch]. Zero means 1.
	Max int
	// Lease is how long the messages stay invisible to other consumers
	// (the visibility timeout), in [MinLease, MaxLease]. Zero means
	// DefaultLease (30s).
	Lease time.Duration
	// Wait is how long to wait when no message is visible (long polling),
	// in [0, MaxWait]. Receive returns as soon as a message becomes
	// visible, or with none when Wait has passed. Zero means do not wait.
	Wait time.Duration
}

// DeadMessage is a message in a queue's dead-letter queue.
type DeadMessage struct {
	ID         string            `json:"id"`
	Body       []byte            `json:"body"`
	Header     map[string]string `json:"header,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	Attempts   int               `json:"attempts"`    // deliveries made before it died
	EnqueuedAt time.Time         `json:"enqueued_at"` // first enqueue
	DeadAt     time.Time         `json:"dead_at"`
	LastError  string            `json:"last_error"`
}

// Stats is a snapshot of one queue.
type Stats struct {
	// Depth counts the messages visible now, waiting for a consumer.
	Depth int `json:"depth"`
	// InFlight counts the messages leased to a consumer.
	InFlight int `json:"in_flight"`
	// Delayed counts the messages not yet visible: delayed at enqueue, or
	// nacked with a delay.
	Delayed int `json:"delayed"`
	// Dead counts the messages in the dead-letter queue.
	Dead int `json:"dead"`
	// Processed counts acks; Failed counts Nacks and DeadLetters (failed
	// attempts a consumer reported); Retried counts deliveries after the
	// first (after a nack or an expired lease). Engines count since they
	// were created; the memory backend since it was.
	Processed uint64 `json:"processed"`
	Failed    uint64 `json:"failed"`
	Retried   uint64 `json:"retried"`
	// DeadDropped counts dead letters discarded because the dead-letter
	// queue was at its bound (see MemoryOptions.MaxDead).
	DeadDropped uint64 `json:"dead_dropped,omitempty"`
	// OldestAge is how long the message that has waited longest (since it
	// was enqueued or redriven) has been in the queue; zero when empty.
	OldestAge time.Duration `json:"oldest_age"`
	// Paused reports whether Receive is paused.
	Paused bool `json:"paused"`
}

// BatchAcker is implemented by a Backend that acks many messages at the
// cost of about one: one lock, one statement or one round trip.
// Queue.AckBatch uses it when the backend has it and acks one by one
// otherwise.
//
// BatchAcker, ReceiveAppender and PrefetchAdvisor are optional: a Backend
// that wraps another (to count or trace calls, say) by embedding the
// Backend interface hides them, and the Queue and Worker then take their
// slower paths. Such a wrapper should forward the ones its backend has.
type BatchAcker interface {
	// AckBatch acks each receipt as Ack would. It returns nil when every
	// ack held, otherwise one error per receipt, nil where the ack held.
	AckBatch(ctx context.Context, queue string, receipts []Receipt) []error
}

// ReceiveAppender is implemented by a Backend that can append what Receive
// returns to the caller's slice, so that a consumer that reuses its slice
// allocates nothing per delivery. Queue.ReceiveAppend uses it when the
// backend has it.
type ReceiveAppender interface {
	// ReceiveAppend is Receive, appending the deliveries to dst.
	ReceiveAppend(ctx context.Context, queue string, dst []Delivery, opts ReceiveOptions) ([]Delivery, error)
}

// BatchError reports the calls of a batch that failed. Errs lines up with
// the batch (nil where the call succeeded); errors.Is and errors.As see
// each of them, so errors.Is(err, ErrStaleReceipt) reports whether any
// receipt was stale.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	n, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("queue: %d of %d in the batch failed, the first: %v", n, len(e.Errs), first)
}

// Unwrap returns the errors of the calls that failed.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Backend is the driver interface that every engine implements: the memory
// backend here, and the PostgreSQL, Redis Streams and NATS JetStream ones.
// It holds what every engine must do and nothing more; validation, typed
// values and the worker pool live in the portable types (Queue, Worker,
// Typed) around it. Queues are named by string and exist from their first
// use. Queue validates every argument against the bounds above before it
// calls a backend, so backends may trust their input.
//
// All methods are safe for concurrent use. Methods given a receipt fail
// with ErrStaleReceipt when it no longer holds its message (its lease
// passed, or the message was delivered again, acked, nacked or
// dead-lettered); the backend's clock decides when a lease has passed.
type Backend interface {
	// Enqueue stores msgs, all or none, and returns their ids in order.
	Enqueue(ctx context.Context, queue string, msgs []Message) ([]EnqueueResult, error)
	// Receive leases up to opts.Max visible messages, highest priority
	// first and in enqueue order within a priority, each to this caller
	// only until opts.Lease passes. When none is visible it waits up to
	// opts.Wait, returning as soon as one becomes visible (an enqueue, a
	// nack, an expired lease, a due delay, a resume) without polling. It
	// returns no messages and no error when the wait ends empty, and
	// ctx.Err() when ctx ends. A paused queue delivers nothing.
	Receive(ctx context.Context, queue string, opts ReceiveOptions) ([]Delivery, error)
	// Extend sets the lease of a delivery to end lease from now.
	Extend(ctx context.Context, queue string, r Receipt, lease time.Duration) error
	// Ack deletes the message: it was processed.
	Ack(ctx context.Context, queue string, r Receipt) error
	// Nack ends the lease and makes the message visible again after
	// delay (at once when zero), recording lastErr.
	Nack(ctx context.Context, queue string, r Receipt, delay time.Duration, lastErr string) error
	// DeadLetter moves the message to the queue's dead-letter queue,
	// recording lastErr and the attempts made.
	DeadLetter(ctx context.Context, queue string, r Receipt, lastErr string) error
	// ListDead returns up to limit dead letters after cursor ("" for the
	// start), oldest death first, and the cursor of the next page ("" when
	// there is none). Cursors are opaque and backend-specific.
	ListDead(ctx context.Context, queue string, cursor string, limit int) ([]DeadMessage, string, error)
	// Redrive moves dead letters back into the queue, visible at once with
	// their attempts reset: those named by ids, or all when ids is empty.
	// Ids that are not dead letters are skipped. It reports how many moved.
	Redrive(ctx context.Context, queue string, ids []string) (int, error)
	// Pause stops deliveries from the queue (enqueues still succeed);
	// Resume starts them again and wakes waiting receivers.
	Pause(ctx context.Context, queue string) error
	Resume(ctx context.Context, queue string) error
	// Stats returns a snapshot of the queue.
	Stats(ctx context.Context, queue string) (Stats, error)
	// Close releases the backend. Waiting Receives return ErrClosed; so
	// does every later call. Close is idempotent.
	Close() error
}

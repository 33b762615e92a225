// Package queue is an at-least-once work queue: messages are stored until a
// consumer processes them and acks, each leased to one consumer at a time,
// retried with backoff when processing fails, and moved to a dead-letter
// queue when it keeps failing. It decouples heavy work from the request that
// asks for it, buffers and batches it, and smooths spiky load: a handler
// enqueues and answers at once; workers in the same or another process do
// the work.
//
// Choose a queue when each message is work that exactly one consumer must
// finish and that must survive that consumer failing. Choose pubsub instead
// when every interested party should see a message and a message nobody
// listens for may pass; choose poll's jobs when a client waits for the
// result of its own request.
//
// # Entry points
//
//   - NewMemory returns the in-memory Backend; queue.New(backend, "jobs")
//     the Queue handle producers and consumers call (Enqueue,
//     EnqueueBatch, Receive, Ack, Nack, Extend, DeadLetter, Dead, Redrive,
//     Pause, Resume, Stats).
//   - NewWorker runs a Handler over a Queue with a pool of goroutines; Typed
//     gives the same with values of a Go type (JSON by default).
//   - NewHandler is the net/http adapter, for producers and consumers in
//     other languages.
//
// The memory backend lives in this package rather than in a subpackage
// because it is first class, not a mock: it is what a one-node service
// runs on and what every test uses, with nothing to import beyond queue.
//
// # Guarantees
//
// Delivery is at least once. While a lease holds, its message is with one
// consumer only; when the lease passes without an ack, the message becomes
// visible again with its Attempt increased, and the old receipt fails with
// ErrStaleReceipt (the work may be done twice: make handlers idempotent, or
// use a DedupKey at the producer). Visible messages are delivered highest
// Priority first and first in, first out within a priority. A receive that
// waits (long polling) is woken by an enqueue, a nack, an expired lease, a
// due delay or a resume, never by polling. Everything is bounded: batch
// sizes, waits, leases and delays by the constants of this package; queue
// depth, dead letters, dedup keys and message size by the backend
// (MemoryOptions says what the memory backend does at each bound).
//
// # The worker
//
// A Worker receives as many messages as it has free handlers plus its
// prefetch (on an engine, by default, a limit that grows while handlers
// run through what waits and shrinks when they are slow, so that the next
// receive is under way while fast handlers work and slow ones leave
// messages to other workers), extends each lease every Lease/3 while its
// message waits or its handler runs, acks on success (on an engine with
// AckBatch, the acks that gather while one batch is on its way go out as
// the next), and on failure nacks with exponential backoff and full jitter (or the delay of a
// RetryAfter error) until MaxAttempts, then dead-letters; a Permanent error
// dead-letters at once. Panics are recovered and count as failures; each
// call has a Timeout. Shutdown stops receiving, waits for running handlers
// up to its context, then gives back what is unfinished with a zero-delay
// nack so another worker takes it at once.
//
// # Backends on the engines
//
// The Backend interface is SQS-shaped, and each engine maps onto it without
// emulation of the core contract:
//
//   - PostgreSQL (pgqueue): one schema per namespace with a jobs table
//     (state ready, waiting, leased, dead or done; priority, seq,
//     visible_at, attempts, token) and a partial index per hot query.
//     Receive is one round trip: a reaper statement moves due waiting and
//     leased rows to ready, then UPDATE ... FROM (SELECT ... ORDER BY
//     priority DESC, seq LIMIT n FOR UPDATE SKIP LOCKED) leases them with
//     a fresh token. The receipt is id and token: Ack, Nack, Extend and
//     DeadLetter match both and visible_at > now(), so a stale receipt
//     touches no row. Acks and extensions are batched by one settler per
//     node. Long-poll receives wait on LISTEN (one connection per node),
//     woken by a NOTIFY from enqueue, nack, redrive and resume, by a timer
//     to the next due row, and by a poll fallback for poolers that break
//     LISTEN. Dedup is a (queue, key) table with an expiry; enqueue and ack
//     can join the caller's own transaction (EnqueueTx, AckTx).
//   - Redis Streams (redisqueue): a stream and a consumer group per
//     priority level, read highest first with XREADGROUP. A lease is a
//     member "<entry>:<delivery>" of a sorted set scored by when it ends;
//     the receipt names that exact delivery, so it is stale once the
//     message is acked, nacked, redelivered or past its lease. Expired
//     leases and due nacks are taken back with XCLAIM from those sets
//     (XAUTOCLAIM's single idle threshold cannot express per-delivery
//     leases or nack delays). Every operation is one Lua script on Redis's
//     clock; delays wait in a sorted set the receive script moves into the
//     stream; dead letters are their own stream; dedup is SET NX PX;
//     long-poll receives are woken by Pub/Sub; acks are batched; acked
//     entries are deleted, so no key grows without bound.
//   - NATS JetStream (natsqueue): a work-queue stream per namespace with a
//     subject per queue and priority level (hence the small priority
//     range) and a durable pull consumer with explicit acks for each;
//     Receive pulls from the highest level that holds messages, and a
//     waiting pull is the long poll. AckWait is the lease, InProgress
//     extends it, the delivery count is Attempt, a nak (with a delay) is
//     Nack; the receipt is the delivery's ack subject, and the backend that
//     received it refuses settlement after its lease, so a receipt is
//     settled by the node that holds it. Delayed enqueues wait in a delay
//     stream whose mover naks each with its remaining time and republishes
//     it when due (a Msg-Id keeps that idempotent). MaxDeliver is enforced
//     by the library with a real dead-letter stream; Msg-Id with the
//     stream's duplicate window is the dedup; Pause is a flag in a
//     key-value bucket every node watches (consumer pause needs 2.11).
//
// Engines keep their own time; the conformance suite (queuetest) runs them
// with short real leases, and the memory backend on a fake clock.
package queue

// Package redisqueue is a queue.Backend on Redis Streams: swap
// queue.NewMemory for New and the Queue, the Worker, Typed and the HTTP
// adapter work unchanged, with messages that survive the process and are
// shared by workers on many machines.
//
// Choose it when the application already runs Redis and wants a durable
// work queue with low latency: it needs Redis 7.0 or later and nothing
// else. Choose the memory backend for one process, pgqueue when the jobs
// must commit with the application's own PostgreSQL transactions, natsqueue
// when NATS JetStream is the engine at hand.
//
// # Entry points
//
//   - New(client, Options) returns a Backend on a *redis.Client the caller
//     owns (Close leaves it open). Options.Namespace isolates applications
//     (and tests) on one Redis; the other options bound depth, dead
//     letters, message size and the deduplication window.
//   - queue.New(backend, "jobs") and queue.NewWorker, as with any backend.
//
// # How it maps the contract onto Redis
//
// Every key of queue q lives under "{ns}:q:<q>:"; the braces make the
// namespace the hash tag, so one namespace is on one node. Every operation
// is one Lua script (one round trip, atomic), and every time that matters
// is Redis's clock (TIME in the script), so all nodes agree on leases and
// delays whatever their own clocks say.
//
//   - Each priority level has its own stream ("s:<p>") with one consumer
//     group and one consumer name (so the group's consumer list never
//     grows, however many processes come and go). A message never yet
//     delivered is an entry past the group's cursor: Receive takes it with
//     XREADGROUP. Streams are read from the highest priority down, which
//     gives the contract's order: higher priority first, FIFO within one.
//   - A delivered message stays in its stream's pending entries list (PEL)
//     until it is acked (XACK and XDEL) or dead-lettered. Its lease is a
//     member "<entry id>:<delivery>" of a sorted set ("l:<p>") scored by
//     the lease's end. A receipt names the priority, the entry and the
//     delivery number, and holds while that exact member is there with a
//     score in the future: a receipt of an expired, redelivered, acked or
//     nacked delivery matches nothing and gets queue.ErrStaleReceipt.
//     Extend rescores the member.
//   - Receive first reclaims, at each priority, the entries whose lease
//     ran out and those nacked whose retry is due (a second sorted set,
//     "r:<p>", scored by when due), oldest entry first, with XCLAIM (which
//     also keeps the PEL's delivery count true for XPENDING and XINFO);
//     then it reads new entries. The delivery number is the Attempt.
//   - Nack moves the member from the lease set to the retry set, due after
//     the delay, and records the last error in a hash; the entry keeps its
//     place, so a retried message comes back before newer ones.
//   - Delayed messages (Delay, RunAt) wait in a sorted set ("delayed")
//     scored by when due; the receive script moves those due into their
//     stream (so a delayed message joins its priority's FIFO when its delay
//     ends). Redis has no timers: a receive that waits arms a local timer
//     to the earliest due delay or lease end, which the script reports.
//   - Dead letters go to a stream of their own ("dead", listed oldest
//     death first, the entry id as the cursor) with the attempts, the last
//     error and the priority; a hash from message id to entry id serves
//     Redrive by id. MaxDead bounds it: the oldest is dropped and counted.
//   - DedupKey is SET NX PX (the window) GET: the key expires by itself,
//     and a duplicate learns the first message's id.
//   - A receive that finds nothing waits for a wake-up on a Pub/Sub
//     channel of the queue, published by the scripts that make a message
//     visible (an enqueue into an empty queue, a nack, a redrive, a
//     resume, a lease that ends before any other) and by no others. Each
//     Backend holds one subscription, read by one goroutine, however many
//     receivers wait; a receiver subscribes before it looks and the
//     subscription's confirmation wakes it, so no wake-up is missed; the
//     subscription reconnects with backoff (and is pinged when silent),
//     and every reconnection wakes every waiter to look again.
//   - Acks are batched: one goroutine takes every ack waiting when it is
//     free and settles them per queue in one script call.
//
// Why a sorted set of lease ends, not XAUTOCLAIM's idle time: XAUTOCLAIM
// reclaims entries idle longer than one min-idle time per call, but leases
// here differ per delivery (each Receive and Extend names its own), a
// nacked entry must stay invisible for its own delay, and XAUTOCLAIM
// scans the PEL from its start, so retries waiting a long backoff would be
// scanned again by every receive. The sorted sets find exactly the due
// entries in O(log n).
//
// # Guarantees
//
// Those of queue.Backend: at-least-once delivery, one consumer per message
// while its lease holds, priority order and FIFO within a priority, with
// these precisions: a message whose delay ends joins the end of its
// priority's stream (the memory backend orders it by its enqueue); when
// more retries of one priority are due at once than a Receive takes, the
// ones whose lease or delay ended first go first; Stats.OldestAge counts
// from when the oldest message entered its stream (enqueue, redrive or the
// end of its delay). Enqueue of a batch is all or none, short of Redis
// failing in the middle of the script (out of memory), which it does not
// roll back.
//
// Bounds: MaxDepth (queue.ErrQueueFull), MaxMessageSize
// (queue.ErrTooLarge), MaxDead (oldest dropped, Stats.DeadDropped), the
// dedup keys expire. No key grows without bound: acked entries are deleted
// from their stream, the lease, retry and error records go with them, and
// a queue's keys are a fixed set (at most 21 streams, one per priority,
// and their sorted sets) plus its dedup keys. Keys stay when a queue is
// empty; delete "{ns}:q:<q>:*" to drop a queue.
//
// # Redis settings that matter
//
//   - Persistence. Messages live in Redis memory. Without persistence (this
//     project's machines) a restart of Redis loses every message, acked or
//     not: the queue starts empty. With AOF and appendfsync everysec, a
//     crash of Redis can lose the last second of enqueues that were
//     acknowledged, and bring back messages acked in that second (they are
//     then delivered again, which at-least-once allows); use appendfsync
//     always where an acknowledged enqueue must never be lost. RDB
//     snapshots alone widen that window to the snapshot interval.
//   - Replication. An enqueue is acknowledged by the primary; after a
//     failover to a replica that had not received it, it is lost as in a
//     crash. WAIT is not used.
//   - Eviction. Use maxmemory-policy noeviction: an evicted stream or
//     sorted set loses messages or leases. Under noeviction a full Redis
//     refuses enqueues with an error instead.
//   - Clients. go-redis retries a command whose reply was lost
//     (Options.MaxRetries, 3 by default), so an Enqueue may store a message
//     twice (give it a DedupKey if that matters); a receive whose reply was
//     lost leaves its messages leased until the lease ends, then they are
//     delivered again. Waiting receivers hold no connection: they wait on
//     the backend's one subscription.
//
// Do not write to the queue's keys with other tools: the scripts keep the
// streams, the PEL and the sorted sets consistent with one another.
package redisqueue

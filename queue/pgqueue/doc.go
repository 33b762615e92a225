// Package pgqueue is a queue.Backend on PostgreSQL: the at-least-once work
// queue of package queue, kept in a table, so that work survives a crash
// of any process and is shared by every node that opens the same
// namespace. An application swaps queue.NewMemory for New and nothing else
// changes: queue.Queue, queue.Worker, queue.Typed and the HTTP adapter take
// any queue.Backend.
//
// Choose it when PostgreSQL is already the system of record, and above all
// when a job must be enqueued (or acked) atomically with your own writes:
// EnqueueTx and AckTx take your pgx.Tx, so a job exists only if your
// transaction commits. Its rate is bounded by the database (see
// Performance); for tens of thousands of jobs per second across many
// machines, or when the database is already busy, pick the Redis or NATS
// backend.
//
// # Entry points
//
//   - Migrate creates a namespace (a PostgreSQL schema: the jobs table and
//     its indexes, the enqueue function, the counters). Call it
//     explicitly, at deploy or start-up; it is idempotent.
//   - New (on your *pgxpool.Pool, which stays yours) or Connect (on a URL)
//     returns a *Backend, one per node and namespace; queue.New(backend,
//     "jobs") is the handle producers and consumers use.
//   - EnqueueTx and AckTx work inside your transaction; Cleanup applies
//     retention now (each node runs it every CleanupInterval).
//
// # How it works
//
// A job is a row with a state: ready, waiting (delayed, or nacked with a
// delay), leased, dead, or done (acked and retained). A lease is a state
// and a time, not a transaction held open: Receive is one round trip that
// runs two statements in one transaction, the reaper (leased and waiting
// rows whose time has passed become ready) and the take, one UPDATE over
// a SELECT ... ORDER BY priority DESC, seq LIMIT n FOR UPDATE SKIP LOCKED,
// that marks the rows leased until now()+lease with a fresh random token.
// The receipt is the row's id and that token: Ack, Nack, Extend and
// DeadLetter match both, and a lease that has passed, so a stale receipt
// changes nothing and reports queue.ErrStaleReceipt. Partial indexes keep
// each statement on the rows it wants (ready rows by priority and order,
// timed rows by due time, dead rows by death), so receive stays an index
// read of the head however many millions of rows the table holds.
//
// Enqueue, Nack, Redrive and Resume NOTIFY the namespace's channel with the
// queue's name, at commit. Each node holds one LISTEN connection and wakes
// its receivers of that queue; a waiting Receive also wakes when the next
// delay or lease of its queue is due, and polls every PollInterval in case
// a notification was lost. Behind a pooler that breaks LISTEN (PgBouncer
// in transaction mode), set NoListen and a shorter PollInterval. The LISTEN
// connection reconnects with exponential backoff and full jitter, and
// wakes every receiver when it is back; the pool reconnects on its own, and
// a Worker retries a failed Receive with backoff, so consumers ride out
// the database going away and coming back.
//
// Acks and extensions are batched: concurrent calls on a node wait for one
// settler, which settles everything waiting in one statement per kind, in
// one round trip; each call still returns its own result once the
// statement that holds its receipt has committed.
//
// # Guarantees
//
// Delivery is at least once, with the semantics of queue.Backend: one
// consumer at a time while a lease holds, the highest priority first and
// first in, first out within a priority (in the order enqueues drew their
// ids: concurrent producers interleave), redelivery with Attempt+1 when a
// lease passes. An Enqueue that returned has committed. Deduplication keys
// are rows with an expiry (DedupWindow), so they work across nodes. The
// database's clock (now()) keeps leases, delays and the dedup window, so
// nodes need not agree on the time.
//
// Consumers' transactions (Receive, Ack, Extend, Nack, DeadLetter) commit
// with synchronous_commit off unless Config.DurableSettle: a crash of the
// database server may forget the last few hundred milliseconds of them,
// and each such loss is a redelivery, which at-least-once allows. Enqueue,
// Redrive, Pause and Resume, and your own transactions, commit as the
// server is configured.
//
// # Bounds
//
// Message size: Config.MaxMessageSize (ErrTooLarge). Acked rows: deleted
// at once, or kept Config.Retention. Dead letters: kept
// Config.DeadRetention (7 days by default), then deleted by the cleanup.
// Dedup keys: deleted by the cleanup once their window has passed. Batches
// and receives: queue.MaxBatch. The depth of a queue is not bounded by the
// backend: the table grows with the disk (watch Stats.Depth). The cleanup
// deletes in statements of at most CleanupBatch rows, one node at a time.
//
// # Performance
//
// On the development machine (2 cores shared with other builds, PostgreSQL
// 15 on loopback with its default settings, fsync on), for 20,000 no-op
// jobs of 128 bytes, in a quiet run: a queue.Worker with 10 handlers
// processed 19,500 to 21,000 jobs per second, acks included (its default
// prefetch stays under PrefetchPerHandler, 3 per handler: larger receives
// lock and write more rows at once and made it slower; 10,200 when it
// received only for free handlers); ten loops of Receive (up to 10) and
// Ack about 11,500, against a bare loop of one-row DELETE ... FOR UPDATE
// SKIP LOCKED on 10 connections at 11,100 with synchronous_commit off
// (7,100 with it on). One producer enqueued 4,900 jobs per second one at a time (each a
// commit; a bare INSERT 6,300) and 135,000 in batches of 100.
// Enqueue→handler latency at 500 jobs per second was 0.5 ms at the median
// and 2.1 ms at the 99th percentile (bare INSERT+NOTIFY to a LISTEN
// connection: 0.4 and 0.7). Under heavy load from other builds every
// figure fell to about half, the bare ones with them. A table with a
// million other rows receives as fast as an empty one. See bench_test.go.
package pgqueue

// Package pgpubsub is a pubsub.Backend on PostgreSQL: publish on one node,
// and subscribers on every node receive it; a client that reconnects to any
// node resumes from its cursor. An application swaps pubsub.NewBroker for
// New and nothing else changes: SSE, push and long polling take any
// pubsub.Backend.
//
// Choose it when PostgreSQL is already the system of record and you want
// fan-out and replay without another engine, or when a message must be
// published atomically with your own writes (PublishTx). Its throughput is
// bounded by the database's commit rate (see Ordering); for tens of
// thousands of messages per second pick the Redis or NATS backend.
//
// # Entry points
//
//   - Migrate creates a namespace (a PostgreSQL schema: the messages table,
//     a metadata row, the publish function) and sets its retention. Call it
//     explicitly, at deploy or start-up; it is idempotent.
//   - New (on your *pgxpool.Pool, which stays yours) or Connect (on a URL)
//     returns a *Broker, one per node and namespace. Publish, Subscribe and
//     Close are those of pubsub.Backend; PublishTx publishes inside your own
//     transaction; Stats reports the local fan-out; Cleanup applies
//     retention now.
//
// # How it works
//
// Publish inserts a row (position bigserial, topic, id, time, header, data)
// and, in the same transaction, NOTIFYs the namespace's channel with the
// position and, when it fits in NOTIFY's 8000 bytes, the message itself.
// Each node holds one connection that LISTENs, whatever its number of
// subscribers, and hands every message in position order to a pubsub.Relay,
// which fans it out locally and joins replays to the live stream. A
// notification that carries the next position is delivered as is; anything
// else (a message too large to carry, a position skipped by a rolled-back
// publish, a reconnection) makes the feed read the table after the last
// position it delivered. A subscription After a cursor replays from the
// table.
//
// # Ordering
//
// A bigserial value is drawn at INSERT but becomes visible at COMMIT, so
// with concurrent publishers a reader can see position 12 before 11
// commits, move past 11 and never see it. pgpubsub makes commit order equal
// position order: the publish function takes a transaction-scoped advisory
// lock (one per namespace) before it draws the position, and PostgreSQL
// releases that lock only after the commit is visible. A reader that sees
// position p has therefore seen every position below p that will ever
// exist; the others were rolled back, and are holes, not gaps.
//
// The cost: publishers of one namespace commit one at a time, so a
// namespace's publish rate is at most one commit (with
// synchronous_commit=on, one WAL flush) per message, and concurrent
// publishers get no group commit. On the development machine (fsync on, a
// loaded 2-core VM) one publisher reached about 1,400 messages per second,
// four concurrent ones about 650, where bare concurrent INSERTs reached
// about 1,400. Use several namespaces to publish more. PublishTx holds the
// lock from the call until your transaction ends: call it last and commit
// soon, because every other publisher of the namespace waits meanwhile.
//
// # Guarantees
//
// Every message has a cursor "epoch.position": the namespace's epoch and
// the row's position, a broker-wide order, so one cursor also resumes a
// wildcard subscription. Publish returns success only after the commit. All
// subscribers receive the messages of a topic in publish order; the feed
// never skips a committed position silently. When the feed reconnects after
// losing its connection (with exponential backoff and full jitter), it
// reads everything after the last position it delivered; if retention
// deleted some of that meanwhile, local subscribers get pubsub.ErrGap
// (reason "trimmed"), and they get none when nothing was lost. A cursor of
// another epoch reports ErrGap with reason "epoch". Publish fails while the
// database is unreachable.
//
// # Retention
//
// Retention belongs to the namespace, not to a topic: Schema.MaxMessages
// (default 100,000) bounds how many of the newest messages of all topics
// together are kept, Schema.MaxAge (default 24 hours) how old they may be.
// The count bound is exact as readers see it: a message beyond it is
// treated as trimmed at once, even before it is deleted. The age bound is
// applied by the cleanup, which each node runs every Config.CleanupInterval
// (default 10 seconds; one node at a time, through a try-lock) in
// transactions of at most CleanupBatch rows; it takes no lock a publisher
// waits for. The metadata row keeps the trimmed watermark, the newest
// deleted position, so that a gap is told from a hole. Give topics of very
// different volume namespaces of their own, so a busy one does not push a
// quiet one's history out.
//
// # Epoch
//
// Migrate stores a random epoch when it creates a namespace. Dropping the
// namespace (DropNamespace) and migrating it again makes a new history with
// a new epoch: nodes notice on their next read and report ErrGap (reason
// "epoch") to their subscribers. A backup restored with its metadata row
// keeps its epoch. Never delete rows or truncate the table by hand: the
// watermark would not know, and a reader could miss messages silently.
//
// # The engine's settings
//
// The guarantees hold for what PostgreSQL keeps. With fsync and
// synchronous_commit on (the defaults), a message for which Publish
// returned is durable. With synchronous_commit=off, a crash can lose the
// last commits after Publish returned and after subscribers received them;
// positions are not reused (sequences are logged ahead), so a cursor past
// the loss resumes without a gap report, though some subscribers never got
// those messages. The same holds after failing over to an asynchronous
// standby; use synchronous replication to avoid it. The feed needs a
// session-level connection: LISTEN does not work through PgBouncer in
// transaction pooling mode, so give the pool a direct or session-pooled
// address. PostgreSQL's notification queue (max_notify_queue_pages) fills
// if a node stops reading for long (its Block subscribers hold the feed up
// to their BlockTimeout); when full, Publish fails instead of dropping.
package pgpubsub

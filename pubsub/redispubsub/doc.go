// Package redispubsub is a pubsub.Backend on Redis: swap pubsub.NewBroker
// for New and the SSE handler, the push hub and long polling work across
// nodes unchanged. What one node publishes every node delivers, and a
// client that reconnects to another node resumes from its cursor.
//
// Choose it when the application already runs Redis and wants cross-node
// fan-out with replay: it needs Redis 6.2 or later (7 on our machines), and
// nothing else. Choose the memory broker for one process, natspubsub or
// pgpubsub when that is the engine at hand.
//
// # Entry points
//
//   - New(ctx, client, options...) returns a Broker on a *redis.Client the
//     caller owns (Close leaves it open). Namespace isolates applications
//     (and tests) on one Redis; Retention bounds the history.
//   - Broker.Publish, Broker.Subscribe and Broker.Close implement
//     pubsub.Backend; Broker.Stats reports the local fan-out's counters.
//
// # How it works
//
// A namespace is one Redis stream, "{ns}:stream", shared by every topic and
// every node, beside a small hash "{ns}:meta" holding the stream's epoch
// and the id of its newest entry:
//
//   - Publish runs one Lua script, atomically: it appends the message to the
//     stream (XADD with MAXLEN, then XTRIM MINID for the age bound) with the
//     epoch and the id of the entry before it, and returns the new id. The
//     id "ms-seq" is the message's Position {Hi: ms, Lo: seq} (its Time is
//     the ms, Redis's clock), and Publish returns pubsub.MakeCursor(epoch,
//     id). One stream gives one broker-wide order, so one cursor resumes a
//     wildcard subscription too; topics are matched on the node, as
//     pubsub.Match does.
//   - Each node runs one feed: a goroutine that loops on a blocking XREAD
//     of the stream on one connection of its own, and hands what it reads,
//     in stream order, to a pubsub.Relay, which fans it out to any number of
//     local subscriptions. Ten thousand subscribers on a node cost one
//     XREAD, not ten thousand connections.
//   - A subscription After a cursor (or FromOldest) replays the stream with
//     XRANGE, then joins the live feed without gap or duplicate: the
//     Relay's handoff.
//
// Why XREAD rather than PUB/SUB for live delivery: the latency is the same
// (Redis wakes a blocked XREAD in the same event-loop turn as it would push
// a PUBLISH), but XREAD delivers the stream itself, in order, with each
// message's id. A PUB/SUB feed would be a second channel with no order
// relative to the stream and no backpressure (Redis disconnects a slow
// subscriber past its output buffer limit), so a node would have to fill
// its holes from the stream anyway.
//
// # Guarantees
//
// Those of pubsub.Backend: per-topic (in fact broker-wide) order; at-most-
// once live delivery plus replay of what the stream retains; and never a
// silent hole. Every entry records the id of the entry added before it, so
// a reader that finds an entry whose predecessor is not what it read last
// knows that what came between was trimmed:
//
//   - a subscription After a cursor whose successors were trimmed reports
//     pubsub.ErrGap ("trimmed"), then continues as its OnGap option says;
//   - a feed that lost its connection reconnects with backoff (full jitter,
//     ReconnectBackoff) and resumes after the last message it delivered; if
//     Redis trimmed something it had not read meanwhile (or while it
//     lagged), its local subscriptions get pubsub.ErrGap, never a hole, and
//     no gap when nothing was lost;
//   - Publish returns an error, never a cursor, when Redis did not take the
//     message (during an outage, say).
//
// The epoch names the stream's history: the script creates it, with SET
// semantics on a missing hash, when the stream or the hash is gone (Redis
// restarted without persistence, a FLUSHDB, an evicted key). Cursors of
// another epoch get pubsub.ErrGap ("epoch"), and a feed that finds a new
// epoch resets its subscriptions with a gap and reads the new stream from
// its start.
//
// # Redis settings that matter
//
//   - Persistence. The history lives in Redis memory. Without persistence
//     (this project's machines) a restart loses it: new epoch, every
//     client's next resume reports a gap. With AOF (appendfsync everysec) a
//     crash can lose the last second of acknowledged messages while the
//     epoch survives: a message Publish acknowledged may then be missing,
//     without a gap signal, for a subscriber that had not received it. Use appendfsync always where that matters; RDB snapshots
//     alone widen the window to the snapshot interval.
//   - Replication. Publish is acknowledged by the primary; after a failover
//     to a replica that had not received the last writes, the same applies
//     as for a crash with AOF. WAIT is not used.
//   - Eviction. Use maxmemory-policy noeviction (or a volatile-* policy;
//     these keys have no TTL): an evicted stream or meta hash is lost
//     history, which starts a new epoch.
//   - Retention. Trimming is approximate by default (Redis drops whole
//     stream nodes, up to stream-node-max-entries = 100 entries), so a
//     stream holds at least the retention count; ExactRetention makes it
//     exact. The count bounds the namespace's stream, not each topic: a busy
//     topic shortens the history of a quiet one. The age bound is applied
//     by Publish: Redis has no expiry of stream entries.
//   - Clients. go-redis retries a command whose reply was lost
//     (Options.MaxRetries, 3 by default), so one Publish may append a
//     message twice; set MaxRetries to -1 if a duplicate is worse than an
//     error. The feed uses a connection of its own, so Publish never waits
//     behind the blocking XREAD.
//   - Cluster. One namespace is one stream in one hash slot; New takes a
//     *redis.Client (standalone or Sentinel failover), not a cluster client.
//
// Do not write to the stream with other tools: the feed steps over entries
// it cannot decode, and XDEL breaks the chain of predecessors, which then
// reports a gap.
package redispubsub

// Package pubsub is publish-subscribe: topics, wildcard subscriptions,
// fan-out, retained history and cursors. It is the backbone the other
// server-to-client patterns stand on: SSE streams, the WebSocket push hub and
// long polling all subscribe to a pubsub broker instead of keeping their own
// registries, which is what lets them work across many nodes.
//
// Choose pubsub when every interested party should see a message (fan-out)
// and a message that nobody is listening for may simply pass. Choose the
// queue package instead when each message is work that exactly one consumer
// must finish, and must survive that consumer failing.
//
// # Entry points
//
//   - NewBroker returns the in-memory Broker: the real implementation for one
//     process, and what tests run on. The engine-backed brokers (Redis, NATS,
//     PostgreSQL) implement the same Backend interface.
//   - Publisher.Publish sends a Message to a topic such as "orders.eu.42".
//   - Subscriber.Subscribe takes a pattern ("orders.*.42", "orders.>") and
//     options, and returns a Subscription to read with Next or NextBatch.
//   - NewPublishHandler publishes HTTP request bodies.
//
// # Subjects
//
// Topics are dot-separated tokens. In patterns, "*" matches exactly one token
// and a final ">" matches one or more, as in NATS. Empty tokens, whitespace,
// and wildcards in a topic are rejected with ErrInvalidSubject.
//
// # Guarantees
//
// Messages of one topic reach every subscriber in publish order. Live
// delivery is at most once; history adds replay. Every message gets a
// Cursor: the broker's epoch and a broker-wide sequence, so one cursor also
// resumes a wildcard subscription. Subscribing After(cursor) replays what
// the broker retains after it and continues live with no gap and no
// duplicate, however many messages are published meanwhile. When history no
// longer reaches the cursor (trimmed, expired, or the cursor is from another
// epoch, such as before a restart of a memory broker) the subscription says
// so with ErrGap before continuing, never with a silent hole.
//
// # Slow subscribers
//
// Every subscription is bounded (Buffer, default 1024 unread live messages)
// and has an overflow Policy: Disconnect (the default; the subscriber
// resumes by cursor), DropOldest, DropNewest, or Block (the only policy that
// slows Publish, and only up to a timeout). A slow subscriber never delays
// the publisher or other subscribers unless it chose Block.
//
// # Cursors on engines
//
// A cursor is "epoch.position". The position is a Position, two unsigned
// 64-bit numbers compared in order, so each engine maps its native ordering
// one to one: a JetStream stream sequence or a PostgreSQL bigserial is
// {Lo: n}, a Redis stream id "ms-seq" is {Hi: ms, Lo: seq}.
package pubsub

// Package natspubsub is a pubsub.Backend on NATS JetStream: the broker to
// swap in for pubsub.NewBroker when one process is no longer enough. SSE,
// push and long polling on node B receive what was published on node A,
// and a client that reconnects to another node resumes from its cursor,
// with nothing else in the application changed.
//
// Choose it when NATS is already your messaging system, or when you want
// the engine's native subjects and wildcards and a retained, replicated
// history with no database. Choose redispubsub or pgpubsub when that is
// the engine you run; keep the memory broker for one process.
//
// # Entry points
//
//   - New(ctx, nc, opts) creates (or updates) the namespace's stream and
//     starts the node's feed. nc is yours: Close leaves it open.
//   - Broker.Publish, Broker.Subscribe and Broker.Close implement
//     pubsub.Backend; Broker.Stats reports the node's local fan-out.
//
// # How it maps onto NATS
//
// A topic "a.b" is the subject "<Namespace>.a.b", and one stream captures
// "<Namespace>.>": subjects, "*" and ">" are NATS's own. The stream
// sequence is the cursor's position (pubsub.Position{Lo: seq}), one order
// for the whole namespace, so one cursor resumes a wildcard subscription
// too. Publish returns once JetStream has acknowledged the message, with
// the cursor of the sequence it was given.
//
// Each node reads one feed: one ephemeral push consumer on the whole
// stream (flow control and idle heartbeats; nothing more than a 2.9 server
// offers), read by one goroutine into a pubsub.Relay, which fans out to
// every local subscription with the memory broker's machinery. Ten
// thousand subscribers on a node, whatever their patterns, cost one
// consumer and one connection. We chose one feed for the namespace rather
// than one per subject pattern because patterns are often per user
// ("user.42.>"), and a consumer per pattern per node would load the server
// with thousands of consumers; because an unfiltered feed sees every
// stream sequence, so a hole in the sequence means exactly a lost message
// and gaps are detected without guesswork; and because it needs no
// multi-filter consumers (NATS 2.10). The cost: a node receives every
// message of the namespace, also those no local subscriber wants; give
// unrelated traffic its own namespace.
//
// A subscription After a cursor or FromOldest reads the history through a
// short-lived pull consumer filtered by its pattern, page by page, then
// joins the live feed with no gap and no duplicate (the Relay's handoff).
// Live subscriptions read no history.
//
// # Guarantees
//
// Per-topic order, and the broker-wide order of the stream. Live delivery
// is at most once per subscription (its overflow policy applies), but the
// feed itself loses nothing: a message lost on the way (connection cut,
// client buffer overflow) is noticed by the consumer's delivery sequence
// or its heartbeat, and the feed starts a new consumer after the last
// message it delivered. When the stream no longer holds what the feed
// missed (trimmed while it was away) every local subscription gets ErrGap
// (Reason "trimmed"), then continues with what is retained: never a
// silent hole, and never a gap when nothing was lost. The feed restarts
// with capped exponential backoff and full jitter, at once when the
// client reconnects.
//
// The epoch is the stream's creation time: it changes exactly when the
// stream is deleted and created again (by an operator, or by this package
// when the stream is gone, as a memory stream is after a server restart).
// Subscribers then get ErrGap (Reason "stream recreated"), and cursors of
// the old stream report ErrGap with Reason "epoch". A Publish that races
// with the re-creation may return a cursor of the old epoch; resuming
// from it reports a gap rather than misreading it.
//
// Publish fails with ErrUnavailable at once while the connection is down,
// and with a timeout error when the acknowledgement does not come: it never
// reports success for a message JetStream did not acknowledge. A message
// whose acknowledgement was lost may still be stored; publish it again with
// the same Message.ID, which is sent as Nats-Msg-Id, and JetStream stores
// it once within Options.DuplicateWindow and returns the same cursor.
// Messages without an ID are not deduplicated (no server memory per
// message); their ID is their cursor.
//
// # Retention
//
// The stream keeps the newest Options.MaxMsgs messages (default one
// million), none older than Options.MaxAge (default 24h), and, if set,
// within Options.MaxBytes — for the namespace as a whole, not per topic.
// A cursor older than the oldest retained message of the namespace
// reports ErrGap, even when the trimmed messages were of other topics (the
// stream cannot tell). Retention is stream configuration: New applies the
// options to the stream, so give every node the same ones.
//
// # The engine's durability settings
//
// What "stored" means is the stream's configuration and the server's:
//   - Storage: jetstream.FileStorage (the default) survives a server
//     restart, and cursors stay valid; jetstream.MemoryStorage is faster but
//     lost on restart, and the stream is created again with a new epoch
//     (every subscriber sees a gap, every old cursor is foreign).
//   - Replicas: with 1, an acknowledged message lives on one server and its
//     disk; with 3 or 5 (in a cluster), the acknowledgement comes once a
//     majority has it, and the history survives the loss of a minority.
//   - The server's fsync policy: file storage writes every acknowledged
//     message to the operating system at once but fsyncs it only
//     periodically (sync_interval, configurable from NATS 2.10, where it
//     defaults to 2 minutes; "always" fsyncs every write). So a machine
//     crash, not a process crash, can lose the last acknowledged messages
//     of a single replica. If it does, the stream's sequence can go back;
//     the feed reports a gap ("stream sequence went back"), but cursors
//     handed out for the lost messages may then name other messages. Use
//     Replicas >= 3, or sync_interval always, when that matters.
//
// # Headers
//
// User headers travel as NATS headers when NATS carries them exactly
// (printable keys without ':', values without CR, LF or blanks at either
// end, no "Nats-" or "Switchboard-" prefix); otherwise the message's
// headers travel URL-encoded in one "Switchboard-Header" header. Either
// way subscribers receive exactly what was published. Messages published
// into the namespace by other NATS clients are delivered too, with their
// headers.
package natspubsub

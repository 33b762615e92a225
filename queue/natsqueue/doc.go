// Package natsqueue is a queue.Backend on NATS JetStream: the backend to
// swap in for queue.NewMemory when work must survive a crash or spread
// over many machines and NATS is the messaging system you run. Producers,
// workers and the HTTP adapter stay as they are.
//
// Choose it over pgqueue when you want no database in the path and the
// lowest latency; choose pgqueue when a job must be enqueued in the same
// transaction as the data it is about, redisqueue when Redis is the engine
// you run. It is written for nats-server 2.9 and needs nothing newer.
//
// # Entry points
//
//   - New(ctx, nc, opts) creates (or updates) the namespace's streams and
//     buckets and returns a ready Backend. nc is yours: Close leaves it
//     open; give it nats.MaxReconnects(-1).
//   - queue.New(backend, "name"), queue.NewWorker: as with any backend.
//
// # How it maps onto JetStream
//
// A namespace holds three streams and two key-value buckets:
//
//   - "<ns>_work", a work-queue stream on "<ns>.q.<queue>.<level>": one
//     subject per queue and priority level (21 levels, hence the small
//     priority range), and one durable pull consumer per queue and level
//     with explicit acks. Receive pulls from the levels that may hold
//     messages, highest first, one pull request for up to Max messages per
//     level: when messages are waiting, a Receive is one round trip. The
//     levels are read from the stream (one stream-info call) at most every
//     Options.Recheck and again before a Receive reports the queue empty;
//     in between, the backend goes by that read and the levels it has
//     published to itself. So its own enqueues keep priority order at
//     once, and a message another backend puts on a level that held
//     nothing is seen within Recheck (at once when this backend's levels
//     run dry). When none is visible, Receive waits with a pull request on
//     the highest level holding messages (or the default level), which the
//     server answers at once on an enqueue, a nak or an expired lease of
//     that level, and looks at the other levels every Recheck (2.9 has
//     neither multiple filter subjects nor priority groups). Pulls reuse a
//     few inbox subscriptions, so a Receive subscribes nothing; a withdrawn
//     pull (context or Close) is cancelled by unsubscribing its inbox: the
//     server drops a pull request nobody listens for.
//   - The lease is the consumer's AckWait (a Receive asking for another
//     lease updates it), Extend is InProgress, Ack is an acknowledgement
//     the server confirms (Ack returns nil only once the server has
//     processed it; acks of concurrent callers are pipelined, and
//     AckBatch sends a batch with every ack confirmed on one inbox, in
//     one round trip), Nack is a
//     nak (NakWithDelay for a delay), so a nacked message keeps its
//     place; Attempt is the delivery's NumDelivered. A nak carries no
//     data: the last error waits for the next delivery in the "<ns>_err"
//     bucket (Options.ErrorTTL).
//   - The receipt is the delivery's ack subject. The backend keeps each
//     delivery in hand with a lease deadline that ends a margin before the
//     server's, and refuses Ack, Nack, Extend and DeadLetter after it with
//     queue.ErrStaleReceipt. So a receipt is settled through the Backend
//     that received it; another Backend (another process) refuses it.
//   - Delayed messages wait in "<ns>_delay", a work-queue stream with a
//     pull consumer per queue. A mover per queue (in every backend that
//     receives from it) naks each delayed message with the time it has
//     left, so the server hands it back exactly when due, then publishes
//     it into the work stream (its Msg-Id names the delayed copy, so a move
//     repeated after a crash stores it once) and acks it.
//   - Dead letters are messages of "<ns>_dead" (limits retention, at most
//     Options.MaxDead per queue, oldest dropped), with the attempts and
//     the last error in headers; the library enforces Options.MaxDeliver
//     itself (JetStream only publishes an advisory) and moves a message
//     delivered more often without being settled to it. Redrive publishes
//     a dead letter back and deletes it.
//   - DedupKey is the Nats-Msg-Id, so the dedup window is the work stream's
//     duplicate window (Options.DedupWindow); a duplicate reports the first
//     message's id because ids are stream sequences. 2.9 purges expired
//     ids lazily: a key can be remembered a little longer than the window.
//     A delayed message is deduplicated against delayed ones only.
//   - Pause is a flag in the "<ns>_ctl" bucket that every backend watches
//     (consumer pause is 2.11): a paused queue's Receive waits without
//     pulling, and Resume wakes it. The same bucket keeps the counters of
//     Stats, added to with compare-and-set every Options.StatsFlush.
//
// # Guarantees
//
// At least once: a message is deleted only by an acknowledgement the
// server confirmed; a consumer that dies loses its leases, and the
// messages come back after AckWait with Attempt increased. Enqueue returns
// once JetStream has stored the message (file storage by default), and
// fails with ErrUnavailable at once while the connection is down: it never
// reports a message stored that was not. A batch is published pipelined
// and is not atomic (2.9 has no batch publish): on an error some messages
// may be stored, so retry with DedupKeys. While the connection is away,
// calls fail with ErrUnavailable and the Worker retries with backoff; the
// NATS client reconnects and every call works again.
//
// Stats are computed from the engine: Depth and InFlight from the
// consumers (a message whose lease ran out counts as in flight until it is
// delivered again, and one nacked by another backend until then too),
// Delayed and Dead from their streams, the counters from the bucket.
package natsqueue

// Package poll is the two polling patterns: short polling (asynchronous
// request-reply jobs) and long polling (waiting for the messages of a
// pubsub topic after a cursor), with net/http handlers and Go clients for
// both.
//
// Short polling is for work that takes longer than a request should:
// the server answers at once (202 Accepted, a Location to poll, a
// Retry-After) and keeps working; the client checks back. Long polling is
// for clients that want to hear about changes soon but can hold neither an
// event stream (package sse) nor a socket (package push): the client asks,
// the server holds the request until there is something after the
// client's cursor or the wait ends, and the client asks again with the
// cursor it got. Prefer sse when the client can keep a stream open: it
// costs one request per connection instead of one per batch.
//
// # Entry points
//
//   - NewJobs starts and tracks work: Submit, Get, Wait, Cancel. Jobs are
//     Pending, Running, then Succeeded, Failed or Canceled, with progress,
//     a result or an error, and expire a TTL after they finish. Work runs
//     through a Runner, by default this node's goroutines, at most Limit at
//     once. The Store (in memory, or PostgreSQL through package pgstore) and
//     the pubsub Broker that carries finish and cancel notifications can be
//     shared, so that any node answers for any job.
//   - Define and SubmitKind run work by name; with JobsOptions.Queue the
//     job travels through a queue (package queue) and QueueHandler runs it
//     on whichever node's queue.Worker takes it, so the work survives the
//     node that accepted it, and a worker stopped mid-job leaves it to be
//     run again by the next.
//   - NewJobsHandler is the HTTP face of Jobs: POST to start, GET to poll
//     (or ?wait= to long-poll the job), 303 to the result, DELETE to cancel.
//   - NewLongPoll serves GET ?cursor=&wait=&max= over any pubsub
//     Subscriber, wildcards included.
//   - JobClient and LongPollClient are the Go clients.
//
// # The long-poll protocol
//
// GET {path}?cursor=C&wait=30s&max=100 answers 200 with a Response: the
// messages after C (oldest first, at most max) and the cursor to send
// next. When messages are waiting it answers at once; otherwise it holds
// the request until one is published or the wait ends (capped at MaxWait,
// jittered down by up to a quarter), then answers with no messages and the
// same cursor. Without a cursor the request starts from now, or from the
// oldest retained message with from=oldest. A cursor that retained history
// no longer reaches gets 410 Gone problem details (type GapProblemType)
// saying why and where history now starts ("oldest"); the client resyncs
// with from=oldest or from now. wait is a Go duration ("30s") or seconds
// ("30"); wait=0 never holds.
//
// A request without a cursor still answers with one: the last message's,
// or, when none arrived, the broker's head as the request ended (every
// broker of this module reports it through pubsub.HeadReader). So a client
// that starts from now and keeps the cursor it is given misses nothing
// between its polls; with a broker that retains no history, a message
// published between two polls is reported as a gap (410) rather than lost
// silently.
//
// # Guarantees
//
// Long polling delivers the messages of a topic in publish order, and a
// client that sends back the cursor it got sees every message once: no
// gap, no duplicate, however publishes and polls interleave, as long as
// the broker retains history back to its cursor (otherwise 410). A held
// request costs a subscription, a timer and a small waiter record, no
// goroutine of its own; it ends at once when the client goes away and on Shutdown,
// which answers it as if its wait had ended. Every bound has a default and
// a named outcome: too many held requests or jobs is 503 with Retry-After,
// a body over the limit 413, bad parameters 400, all as RFC 9457 problem
// details.
//
// A job's status changes only forward: once final it stays so, and a
// cancel that races with the work finishing is decided by the store (the
// first final status wins). Cancel reaches the work's context on any node
// that shares the Broker.
package poll

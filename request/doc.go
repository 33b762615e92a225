// Package request is typed request-response over plain net/http: a client
// sends a Req, a handler returns a Resp or an error, and both sides speak
// the same error codes. It is the first pattern to reach for; choose
// another when the answer is not ready within one request (poll: 202 and a
// status resource), when the server must speak first or often (sse, push),
// or when the work must survive the caller (queue).
//
// Compared with what it replaces: unlike hand-written net/http and
// encoding/json it has types, an error model and safe retries; unlike
// connect-go it needs no protobuf; unlike go-kit its endpoints are generic
// functions, not interface{}.
//
// # Entry points
//
//   - [NewHandler] turns func(ctx, Req) (Resp, error) into an http.Handler
//     to mount on any ServeMux pattern ("POST /greetings",
//     "GET /greetings/{id}"; [PathValue] reads the wildcards).
//   - [NewClient] and [Call] send a Req and decode the Resp, over any
//     [Doer]: an *http.Client, or [InMemory], which calls a handler
//     directly and is what tests use.
//   - [Error] and [Code]: the one error type and its twelve codes. A
//     handler returns request.NotFound or request.Errorf(request.NotFound,
//     ...); the caller gets an *Error back and switches on e.Code or
//     errors.Is(err, request.NotFound).
//   - Server middleware, func(http.Handler) http.Handler: [Idempotency]
//     (with a [Store]; [NewMemoryStore] in memory) and [Coalesce].
//   - Client transports that wrap a Doer: [Hedge] and [NewBreaker].
//   - [Interceptor]: middleware of one shape for both sides; [Logging],
//     [Recover], [Timeout], [Auth], [Metrics].
//
// # Guarantees
//
// Errors travel as RFC 9457 problem details (application/problem+json)
// with the code, and field errors, as extension members; a Code maps to
// one HTTP status in one place ([Code.HTTPStatus], and
// [CodeForStatus] for answers without a code). The text of an Internal
// error stays in the server log unless marked Public. Bad input — a
// malformed or oversized body (413), an unsupported Content-Type (415),
// an unacceptable Accept (406), unknown fields, a failed Validate (400 or
// 422) — gets a problem before the handler runs. A panic is a 500 with
// its stack logged; nothing crashes.
//
// Deadlines: the caller's context deadline travels as [TimeoutHeader] and
// becomes the handler's deadline less a margin, across any number of
// hops; a handler whose deadline passes answers 504, and a caller that
// went away is logged as 499, never 408. Every handler has a deadline
// (HandlerOptions.MaxTimeout, 1 minute by default); its timer is made only
// once the handler asks its context (Done, Err, or a context derived from
// it that does), so a handler that never waits on anything pays nothing
// for it.
//
// Retries: exponential backoff with full jitter, at most MaxAttempts,
// Retry-After honoured as a minimum, and a token-bucket [Budget] so that
// retries cannot multiply an outage. A call is retried only when that is
// safe (an idempotent method, or an Idempotency-Key) and never after its
// context ends.
//
// Bounds: request bodies (1 MiB), response bodies (4 MiB), idempotency
// records (10000, then refused with 503), breaker circuits (1024 hosts,
// then unguarded), coalesced responses (4 MiB, then not shared): each
// bound is an option with its default and says what happens at it.
//
// # Cost
//
// A typed call costs about what the hand-written net/http and
// encoding/json code it replaces costs, allocations included (see
// BenchmarkRoundTrip): request and response bodies are encoded and
// decoded in pooled buffers, a Client over [InMemory] hands the handler
// its request without building one for the network first, and
// [InMemory] takes no network at all, about ten times faster than
// loopback HTTP.
//
// # Configuration
//
// Constructors take an options struct whose nil pointer and zero fields
// mean the documented defaults. The one exception is per call: [Call]
// takes [CallOption] functions, such as [IdempotencyKey].
//
// # Layers
//
// On a client, interceptors see one logical call; the Doer below them
// (Breaker, Hedge, or your own) sees every attempt. On a server, the
// middleware (Idempotency, Coalesce, your authentication) sees HTTP
// requests; interceptors see the decoded, validated Req. The Idempotency
// middleware therefore scopes keys by an Identity function of the HTTP
// request (by default the Authorization header).
package request

// Package sse is server-sent events: a one-way stream of events from server
// to browser over plain HTTP, which the browser's EventSource reads and
// resumes by itself after a dropped connection.
//
// Choose SSE when the server pushes and the client only listens (feeds,
// notifications, progress, dashboards): it passes through proxies and HTTP/2
// as ordinary HTTP, needs no client library in a browser, and reconnects on
// its own. Choose the push package (WebSocket) when the client also sends a
// steady flow of messages, and long polling (package poll) for clients that
// can hold neither a stream nor a socket.
//
// # Entry points
//
//   - NewHandler streams a pubsub subscription to every client that connects.
//     Each event's id is the message's pubsub cursor, so a browser that
//     reconnects sends it back as Last-Event-ID and the stream resumes from
//     the broker's history with no gap and no duplicate. When history no
//     longer reaches that far, the stream sends a "gap" event (GapEvent) so
//     the page knows to reload its state.
//   - Client is a Go EventSource: it reconnects with the server's retry hint,
//     backs off with jitter on repeated failures, and sends Last-Event-ID.
//   - Decoder parses an event stream exactly as the WHATWG HTML standard
//     says; AppendEvent and AppendComment encode one.
//
// # The handler's guarantees
//
// Events of one topic arrive in publish order. Each message is encoded once
// for all streams, and a stream writes its whole backlog in one write and
// one flush. A client that reads too slowly is disconnected (Buffer) rather
// than allowed to grow the server's memory; it resumes from its last event
// id. Heartbeat comments keep idle streams open through proxies. Streams end
// when the client goes away, when the broker closes, after MaxLifetime
// (jittered), and on Shutdown, which http.Server.Shutdown does not do by
// itself. Responses carry Cache-Control: no-cache and X-Accel-Buffering: no
// and are flushed at once, so buffering proxies and fetch see the stream
// start.
package sse

// Package push is bidirectional push over WebSocket: clients connect, the
// server sends whenever it has something, and clients send too. A Hub owns
// the connections and delivers to one connection, to every connection of a
// user, to the subscribers of a topic, or to everyone, across every node
// that shares a pubsub broker.
//
// Choose push when the client also talks back over the same connection
// (chat, collaborative editing, games, acknowledgements). For one-way
// server-to-browser streams prefer the sse package: plain HTTP, automatic
// browser reconnection, no upgrade for proxies to get wrong. For clients
// that cannot hold a connection open, long polling (package poll).
//
// # Entry points
//
//   - NewHub(broker, options...) returns a running Hub; Shutdown ends it.
//   - NewHandler(hub, options...) is the http.Handler that upgrades
//     requests to WebSocket: mount it at GET /ws. Its Authenticate option
//     is the auth hook; Origin is checked by default.
//   - Hub.Publish, Hub.SendUser, Hub.Broadcast and Hub.Send address a
//     topic, a user, everyone, one connection.
//   - Connect(ctx, "ws://host/ws") is the Go client: it reconnects, and
//     resumes its subscriptions by cursor.
//   - Pipe and Hub.Pipe are the in-memory transport for tests. Hub code
//     sees only the Conn interface; the WebSocket library stays in the
//     transport (NewHandler, Dial).
//
// # How it scales
//
// The hub subscribes to the broker once per topic pattern its clients use,
// once per connected user ("<prefix>.user.<hex of the user id>") and once
// for broadcasts ("<prefix>.all"), and fans each message out to its local
// connections; a message is encoded once for all of them
// (pubsub.Message.Encoded). So cost grows with topics, not with
// connections × topics, and a message published on any node reaches
// subscribers on every node. Presence travels on "<prefix>.presence".
// Hub.Send reaches a connection of this hub only.
//
// # Guarantees
//
// Each connection has exactly one writer goroutine, and a send queue
// bounded in messages and bytes (SendQueue). The writer takes everything
// queued at once and packs it into one frame (up to MaxFrameBytes). When a
// client cannot keep up, the SlowConsumer policy applies: by default the
// connection is closed with StatusSlowConsumer (4000); the client
// reconnects and resumes by cursor, losing nothing the broker retains. One
// slow connection never delays another or the publisher. Each write has a
// timeout (WriteTimeout). The hub pings every connection (Heartbeat) and
// closes one whose pong does not come in time with StatusPingTimeout
// (4001); it always reads every connection, so pings work without any
// reading on the application's part.
//
// Messages of one topic reach a subscription in publish order. A
// subscription "after" a cursor first replays what the broker retains
// after it, then continues live, with no gap and no duplicate at the
// handoff; when history no longer reaches the cursor the client gets a
// "gap" message first. Messages to a user, to everyone or to one
// connection are delivered at most once and carry no cursor.
//
// Safe by default: a browser's Origin must match the host unless
// OriginPatterns allows it; the auth hook runs before the upgrade and
// refuses with 401/403 problem details (RFC 9457), as do the other
// refusals before the upgrade; each client message is bounded (ReadLimit,
// 64 KiB); compression is off; connections are bounded per user
// (StatusUserLimit, 4002) and in total (StatusTryAgainLater, 1013).
// Shutdown closes every connection with StatusGoingAway (1001) and waits
// for all their goroutines.
//
// # Wire protocol
//
// One WebSocket connection carries text frames. Each frame holds one or
// more messages, each a JSON object on one line, separated by "\n" (a
// writer packs what queued up while it was busy into one frame). Every
// message has a "type". Members that do not apply are omitted; unknown
// members are ignored.
//
// Payloads travel in exactly one of three members, chosen by the sender:
// "data" holds the payload itself when it is valid JSON on one line;
// "text" holds it as a JSON string when it is other UTF-8 text; "base64"
// holds it base64-encoded (standard alphabet, padded) otherwise. The
// receiver gets back the same bytes whichever member carried them. No
// payload member means an empty payload.
//
// Client to server:
//
//	{"type":"subscribe","id":"1","topic":"chat.*","after":"<cursor>"}
//	{"type":"unsubscribe","id":"2","topic":"chat.*"}
//	{"type":"send","id":"3","data":{"text":"hi"}}
//
// "topic" is a pattern: dot-separated tokens, "*" matches one token, a
// final ">" the rest (patterns may not start with a wildcard, nor with the
// hub's reserved prefix, "push" by default). "after" is optional: the
// cursor of the last message the client received on this subscription.
// "send" carries a payload to the server's handler. "id" is optional on
// every message; when present, the server answers with a "reply" or an
// "error" with the same id (for "send", the reply carries the handler's
// answer). Clients choose ids; they are strings, unique among the client's
// requests that are waiting for an answer. A client should give up waiting
// after a timeout of its own.
//
// Server to client:
//
//	{"type":"welcome","conn":"01J...","user":"ann"}
//	{"type":"message","sub":"chat.*","topic":"chat.room1","cursor":"k3x9.42","data":{"text":"hi"}}
//	{"type":"message","text":"to you"}
//	{"type":"gap","sub":"chat.*","after":"k3x9.7","reason":"trimmed"}
//	{"type":"reply","id":"3","data":{"ok":true}}
//	{"type":"error","id":"1","error":"push: reserved pattern push.all"}
//
// "welcome" is the first message of every connection: the connection's id
// and user. "message" is a delivery: with "sub" (the subscription's
// pattern, as the client sent it), "topic" and "cursor" when it comes from
// a subscription, without them when it was sent to this connection, its
// user, or everyone. A message matching two of a client's patterns comes
// once per pattern. The client keeps the last "cursor" of each
// subscription and, after reconnecting, subscribes again with "after" set
// to it. "gap" says that messages after "after" on "sub" are lost (reasons
// "trimmed", "epoch", "not retained", "unknown cursor"; "dropped", without
// "sub", when the DropNewest policy dropped messages to this connection);
// the subscription continues with what follows. An "error" without an id
// answers a message that had none.
//
// The server closes a connection with one of the StatusCode values:
// 1000 normal, 1001 going away (shutdown), 1007 a malformed frame, 1009 a
// message over the read limit, 1013 the hub is full, 4000 slow consumer,
// 4001 ping timeout, 4002 too many connections for the user. On 1001,
// 1013 and 4000–4001 a client reconnects (with backoff and jitter) and
// resumes by cursor.
package push

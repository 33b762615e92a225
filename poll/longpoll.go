package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/drain"
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults and bounds of LongPollOptions.
const (
	DefaultWait        = 30 * time.Second
	DefaultMaxWait     = 60 * time.Second
	DefaultMax         = 100
	DefaultMaxMessages = 1000
	DefaultMaxHeld     = 100_000
)

// LongPollOptions configures NewLongPoll. Nil or zero fields mean the
// defaults.
type LongPollOptions struct {
	// DefaultWait is the wait of a request without a wait parameter.
	// Default DefaultWait (30s).
	DefaultWait time.Duration
	// MaxWait caps the wait a request asks for. Default DefaultMaxWait
	// (60s). Every wait is then jittered down by up to a quarter, so that
	// a fleet of clients spreads out.
	MaxWait time.Duration
	// MaxMessages caps the max parameter (messages per response). Default
	// DefaultMaxMessages; a request without max gets DefaultMax (or
	// MaxMessages when smaller).
	MaxMessages int
	// MaxHeld bounds the requests held at once; past it a request that
	// would wait gets 503 with Retry-After. Default DefaultMaxHeld.
	MaxHeld int
	// Clock sets the clock behind waits. Default: the real clock.
	Clock clock.Clock
}

// LongPoll answers GET requests for the messages of a pubsub topic (or
// pattern) after a cursor, holding a request until there is one or its
// wait ends. See the package documentation for the protocol.
//
// A held request costs its subscription, a timer and a small waiter
// record (no context of its own, no buffer): no goroutine beyond the one
// net/http already runs for it, and nothing on the server polls in a loop.
// The timer and Shutdown end a wait by closing the subscription. Each
// message is encoded once however many requests send it, and a response
// is built in a pooled buffer.
type LongPoll struct {
	sub   pubsub.Subscriber
	topic pubsub.TopicFunc
	opts  LongPollOptions
	clock clock.Clock
	key   *encodingKey

	closing atomic.Bool // set by Shutdown, under mu
	reqs    drain.Group // refused and waited for by Shutdown
	held    atomic.Int64

	mu      sync.Mutex
	waiting *waiter // held requests, for Shutdown to end; guarded by mu
}

type encodingKey struct{}

// NewLongPoll returns a handler that long-polls sub. topic decides each
// request's pattern (wildcards allowed) and is its authorization hook (see
// pubsub.TopicFunc).
//
//	mux.Handle("GET /updates/{topic}", poll.NewLongPoll(broker,
//		func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }, nil))
func NewLongPoll(sub pubsub.Subscriber, topic pubsub.TopicFunc, opts *LongPollOptions) *LongPoll {
	var o LongPollOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.DefaultWait <= 0 {
		o.DefaultWait = DefaultWait
	}
	o.DefaultWait = min(o.DefaultWait, o.MaxWait)
	if o.MaxMessages <= 0 {
		o.MaxMessages = DefaultMaxMessages
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = DefaultMaxHeld
	}
	return &LongPoll{sub: sub, topic: topic, opts: o, clock: clock.Or(o.Clock), key: &encodingKey{}}
}

// Held reports how many requests are held, waiting for a message.
func (h *LongPoll) Held() int { return int(h.held.Load()) }

// Shutdown answers every held request at once, as if its wait had ended
// (200, no messages, the same cursor, Connection: close), refuses new
// requests with 503, and waits for the handlers to return or ctx to end.
// http.Server.Shutdown does not end held requests by itself: call this
// first, or register it with Server.RegisterOnShutdown.
func (h *LongPoll) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing.Store(true)
	for w := h.waiting; w != nil; w = w.next {
		w.end(endShutdown)
	}
	h.mu.Unlock()
	h.reqs.Close()
	return h.reqs.Wait(ctx)
}

// Response is the JSON body of a long-poll response.
type Response struct {
	// Messages are the messages after the request's cursor, oldest first;
	// empty when the wait ended without one.
	Messages []Message `json:"messages"`
	// Cursor is what to send as the next request's cursor: the last
	// message's, or the request's own when there are no messages.
	Cursor pubsub.Cursor `json:"cursor"`
}

// Message is one message in a long-poll response. On the wire its data
// is a JSON string ("data") when it is valid UTF-8, and base64 ("data_b64")
// otherwise; Data holds the bytes either way.
type Message struct {
	ID     string        `json:"id"`
	Topic  string        `json:"topic"`
	Cursor pubsub.Cursor `json:"cursor"`
	Time   time.Time     `json:"time"`
	Data   []byte        `json:"-"`
}

type wireMessage struct {
	ID      string        `json:"id"`
	Topic   string        `json:"topic"`
	Cursor  pubsub.Cursor `json:"cursor"`
	Time    time.Time     `json:"time"`
	Data    *string       `json:"data,omitempty"`
	DataB64 []byte        `json:"data_b64,omitempty"`
}

// MarshalJSON writes the wire form.
func (m Message) MarshalJSON() ([]byte, error) {
	w := wireMessage{ID: m.ID, Topic: m.Topic, Cursor: m.Cursor, Time: m.Time}
	if utf8.Valid(m.Data) {
		s := string(m.Data)
		w.Data = &s
	} else {
		w.DataB64 = m.Data
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the wire form.
func (m *Message) UnmarshalJSON(b []byte) error {
	var w wireMessage
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*m = Message{ID: w.ID, Topic: w.Topic, Cursor: w.Cursor, Time: w.Time, Data: w.DataB64}
	if w.Data != nil {
		m.Data = []byte(*w.Data)
	}
	return nil
}

func (h *LongPoll) encode(m *pubsub.Message) []byte {
	b, _ := Message{ID: m.ID, Topic: m.Topic, Cursor: m.Cursor, Time: m.Time, Data: m.Data}.MarshalJSON()
	return b
}

// chunks lends requests the buffer they take waiting messages in, a chunk
// at a time, only while they take them: a held request holds none.
var chunks = sync.Pool{New: func() any { return new([chunkSize]pubsub.Message) }}

const chunkSize = 32

// bodies lends requests the buffer their response is built in, from the
// first message taken to the response written. Buffers that grew past
// maxPooledBody are left to the collector.
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledBody = 64 << 10

// The options every subscription shares: built once, not per request.
var (
	disconnect = pubsub.Overflow(pubsub.Disconnect)
	fromOldest = pubsub.FromOldest()
)

// Header values set on every response, shared by all of them: net/http
// copies header values before writing them, and each slice is full, so an
// append by a wrapping handler copies too.
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	closeConnection = []string{"close"}
)

// lpRequest is a long-poll request's parameters, validated.
type lpRequest struct {
	pattern    string
	cursor     pubsub.Cursor
	wait       time.Duration
	limit      int
	fromOldest bool
}

func (h *LongPoll) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.reqs.Enter() {
		writeProblem(w, problemFor(ErrClosed))
		return
	}
	defer h.reqs.Leave()
	var req lpRequest
	if !h.parse(w, r, &req) {
		return
	}
	h.serve(w, r, &req)
}

// parse validates r into req, or answers it with problem details and
// returns false.
func (h *LongPoll) parse(w http.ResponseWriter, r *http.Request, req *lpRequest) bool {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeProblem(w, problem.New(http.StatusMethodNotAllowed, "long polling uses GET"))
		return false
	}
	if h.closing.Load() {
		writeProblem(w, problemFor(ErrClosed))
		return false
	}
	pattern, err := h.topic(r)
	if err != nil {
		writeProblem(w, pubsub.RefusalProblem(err))
		return false
	}
	if err := pubsub.ValidatePattern(pattern); err != nil {
		writeProblem(w, problem.New(http.StatusBadRequest, err.Error()))
		return false
	}
	q := parseQuery(r.URL.RawQuery)
	wait, err := parseWait(q.wait, h.opts.DefaultWait, h.opts.MaxWait)
	if err != nil {
		writeProblem(w, problemFor(err))
		return false
	}
	limit, err := parseMax(q.max, min(DefaultMax, h.opts.MaxMessages), h.opts.MaxMessages)
	if err != nil {
		writeProblem(w, problemFor(err))
		return false
	}
	*req = lpRequest{pattern: pattern, cursor: pubsub.Cursor(q.cursor), wait: wait, limit: limit}
	switch from := q.from; {
	case from == "" || from == "now":
	case from != "oldest":
		writeProblem(w, problemFor(&ParamError{Name: "from", Value: from, Want: `"now" or "oldest"`}))
		return false
	case q.cursor != "":
		writeProblem(w, problemFor(&ParamError{Name: "from", Value: from, Want: "no cursor with it: send a cursor or from=oldest, not both"}))
		return false
	default:
		req.fromOldest = true
	}
	return true
}

// query holds the parameters a long poll reads, each as url.Values.Get
// would return it.
type query struct{ cursor, wait, max, from string }

// parseQuery reads the long-poll parameters out of a raw query with the
// rules of url.ParseQuery (pairs separated by "&", a pair with ";" or bad
// escapes ignored, the first value of a name wins, nothing at all past
// maxQueryParams pairs), without building a map of them all.
func parseQuery(raw string) query {
	var q query
	if strings.Count(raw, "&") >= maxQueryParams {
		return q
	}
	var seen [4]bool
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err1 := queryUnescape(k)
		v, err2 := queryUnescape(v)
		if err1 != nil || err2 != nil {
			continue
		}
		var i int
		var dst *string
		switch k {
		case "cursor":
			i, dst = 0, &q.cursor
		case "wait":
			i, dst = 1, &q.wait
		case "max":
			i, dst = 2, &q.max
		case "from":
			i, dst = 3, &q.from
		default:
			continue
		}
		if !seen[i] {
			seen[i], *dst = true, v
		}
	}
	return q
}

// maxQueryParams is url.ParseQuery's default bound on the pairs of a
// query; past it, url.URL.Query returns no values.
const maxQueryParams = 10_000

// queryUnescape is url.QueryUnescape, without its copy when there is
// nothing to unescape.
func queryUnescape(s string) (string, error) {
	if strings.ContainsAny(s, "%+") {
		return url.QueryUnescape(s)
	}
	return s, nil
}

// serve answers a valid request: at once when messages are waiting (or the
// request cannot wait), otherwise when the hold ends.
func (h *LongPoll) serve(w http.ResponseWriter, r *http.Request, req *lpRequest) {
	opts := make([]pubsub.SubscribeOption, 1, 2)
	opts[0] = disconnect
	switch {
	case req.fromOldest:
		opts = append(opts, fromOldest)
	case req.cursor != "":
		opts = append(opts, pubsub.After(req.cursor))
	}
	// The subscription lives as long as this call (deferred Close), so it
	// needs no context of its own.
	sub, err := h.sub.Subscribe(context.Background(), req.pattern, opts...)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	defer sub.Close()
	cursor := req.cursor
	if cursor == "" {
		// A client without a cursor starts now; if nothing arrives it
		// must still leave with a cursor, or whatever is published before
		// its next poll is lost to it. The broker's head, read after
		// subscribing, is exactly where this request's view ends.
		if hr, ok := h.sub.(pubsub.HeadReader); ok {
			head, err := hr.Head(r.Context())
			if err != nil {
				writeProblem(w, problemFor(err))
				return
			}
			cursor = head
		}
	}

	var a answer
	defer a.release()
	err = h.take(sub, &a, req.limit)
	if a.n == 0 && errors.Is(err, pubsub.ErrGap) {
		var g *pubsub.GapError
		errors.As(err, &g)
		writeProblem(w, gone(cursor, g, oldest(sub)))
		return
	}
	var ended endReason
	if a.n == 0 && errors.Is(err, context.Canceled) && req.wait > 0 {
		// Nothing yet: hold.
		ended, err = h.hold(r.Context(), sub, req.wait, &a)
		if err == nil {
			_ = h.take(sub, &a, req.limit)
		}
	}
	switch {
	case a.n > 0:
		h.respond(w, &a, a.cursor, false)
	case r.Context().Err() != nil:
		// The client went away: nobody to answer.
	case ended == 0 && errors.Is(err, pubsub.ErrClosed), errors.Is(err, errTooManyHeld):
		writeProblem(w, problemFor(err))
	default:
		// The wait ended (or Shutdown ended it), nothing to wait for
		// (wait=0), or ErrSlowConsumer (the next request resumes from
		// history): no messages, the same cursor. After Shutdown the
		// connection closes.
		h.respond(w, &a, cursor, h.closing.Load())
	}
}

// answer is a response being built: the messages' encodings, comma
// separated, in a pooled buffer taken with the first of them.
type answer struct {
	bp     *[]byte
	n      int           // messages in the body
	cursor pubsub.Cursor // the last message's
}

// add appends m to a.
func (h *LongPoll) add(a *answer, m *pubsub.Message) {
	if a.bp == nil {
		a.bp = bodies.Get().(*[]byte)
		*a.bp = append((*a.bp)[:0], `{"messages":[`...)
	}
	if a.n > 0 {
		*a.bp = append(*a.bp, ',')
	}
	*a.bp = append(*a.bp, m.Encoded(h.key, h.encode)...)
	a.n++
	a.cursor = m.Cursor
}

func (a *answer) release() {
	if a.bp != nil && cap(*a.bp) <= maxPooledBody {
		bodies.Put(a.bp)
	}
	a.bp = nil
}

// take adds to a what is waiting on sub, without waiting, until a holds
// limit messages. It returns NextBatch's error: context.Canceled when
// nothing more is waiting.
func (h *LongPoll) take(sub pubsub.Subscription, a *answer, limit int) error {
	c := chunks.Get().(*[chunkSize]pubsub.Message)
	defer func() {
		clear(c[:])
		chunks.Put(c)
	}()
	for a.n < limit {
		want := min(chunkSize, limit-a.n)
		msgs, err := pubsub.Drain(sub, c[:0:want])
		for i := range msgs {
			h.add(a, &msgs[i])
		}
		if err != nil || len(msgs) < want {
			return err // nil when it took what was waiting
		}
	}
	return nil
}

// oldest returns the oldest message sub has, if any: after a gap, where
// history now starts.
func oldest(sub pubsub.Subscription) []pubsub.Message {
	msgs, _ := pubsub.Drain(sub, make([]pubsub.Message, 0, 1))
	return msgs
}

// hold waits for a message, the end of the wait, the client (ctx) or
// Shutdown, and adds the message to a. It reports why the wait ended, if
// it did. It allocates a waiter and a timer: no goroutine, no context.
func (h *LongPoll) hold(ctx context.Context, sub pubsub.Subscription, wait time.Duration, a *answer) (endReason, error) {
	if n := h.held.Add(1); n > int64(h.opts.MaxHeld) {
		h.held.Add(-1)
		return 0, errTooManyHeld
	}
	defer h.held.Add(-1)
	w := &waiter{sub: sub}
	if !h.link(w) {
		return endShutdown, nil
	}
	t := h.clock.AfterFunc(jitter(wait), w.expire)
	got, err := sub.NextBatch(ctx, w.one[:0])
	t.Stop()
	h.unlink(w)
	if err != nil {
		return endReason(w.reason.Load()), err
	}
	h.add(a, &got[0])
	clear(w.one[:])
	return 0, nil
}

// waiter is a held request, linked into LongPoll.waiting. The timer or
// Shutdown ends its wait by closing its subscription, which wakes it.
type waiter struct {
	sub        pubsub.Subscription
	one        [1]pubsub.Message // what the wait receives
	reason     atomic.Int32      // an endReason, set before the subscription closes
	prev, next *waiter           // guarded by LongPoll.mu
}

// endReason says why a hold ended without a message.
type endReason int32

const (
	endExpired endReason = iota + 1
	endShutdown
)

func (w *waiter) expire() { w.end(endExpired) }

func (w *waiter) end(r endReason) {
	w.reason.CompareAndSwap(0, int32(r))
	_ = w.sub.Close()
}

// link adds w to the held requests, unless Shutdown has begun.
func (h *LongPoll) link(w *waiter) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing.Load() {
		return false
	}
	w.next = h.waiting
	if w.next != nil {
		w.next.prev = w
	}
	h.waiting = w
	return true
}

func (h *LongPoll) unlink(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		h.waiting = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
}

var errTooManyHeld = errors.New("poll: too many held requests")

// jitter shortens d by a random amount of up to a quarter.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

// respond writes a's messages (none when a is empty) and cursor.
func (h *LongPoll) respond(w http.ResponseWriter, a *answer, cursor pubsub.Cursor, closing bool) {
	if a.bp == nil {
		a.bp = bodies.Get().(*[]byte)
		*a.bp = append((*a.bp)[:0], `{"messages":[`...)
	}
	b := append(*a.bp, `],"cursor":`...)
	b = strconv.AppendQuote(b, string(cursor)) // cursors are ASCII without quotes or escapes
	b = append(b, "}\n"...)
	*a.bp = b
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Cache-Control"] = noStore
	hdr["Content-Length"] = []string{strconv.Itoa(len(b))}
	if closing {
		hdr["Connection"] = closeConnection
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// gone is the 410 for a cursor that history no longer reaches. It says
// where history now starts: "oldest" is the cursor of the oldest message
// still retained (empty when none is), which a request with from=oldest
// receives first.
func gone(cursor pubsub.Cursor, g *pubsub.GapError, oldest []pubsub.Message) problem.Details {
	var first pubsub.Cursor
	if len(oldest) > 0 {
		first = oldest[0].Cursor
	}
	d := problem.New(http.StatusGone, fmt.Sprintf(
		"history no longer reaches cursor %q (%s): resync with from=oldest (history now starts at %q) or without a cursor",
		cursor, g.Reason, first))
	d.Type = GapProblemType
	d.Extensions = map[string]any{"cursor": cursor, "reason": g.Reason, "oldest": first}
	return d
}

// GapProblemType is the problem type of the 410 Gone a long-poll request
// gets when history no longer reaches its cursor. Its extension members
// are "cursor" (the request's), "reason" (as pubsub.GapError's) and
// "oldest" (the cursor of the oldest retained message, "" when none).
const GapProblemType = "https://switchboard-go.github.io/problems/poll-gap"

func parseWait(s string, def, maxWait time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := parseDuration(s)
	if err != nil || d < 0 {
		return 0, &ParamError{Name: "wait", Value: s, Want: "a duration such as 30s, or seconds"}
	}
	return min(d, maxWait), nil
}

// parseDuration reads "30s" (Go syntax) or "30" (seconds).
func parseDuration(s string) (time.Duration, error) {
	if strings.TrimLeft(s, "0123456789") != "" {
		return time.ParseDuration(s) // not all digits: skip ParseUint's error value
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

func parseMax(s string, def, limit int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, &ParamError{Name: "max", Value: s, Want: fmt.Sprintf("a whole number from 1 to %d", limit)}
	}
	return min(n, limit), nil
}

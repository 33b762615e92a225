package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/internal/clock"
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
// A held request costs its subscription, a timer and two contexts: no
// goroutine beyond the one net/http already runs for it, and nothing on
// the server polls in a loop. Each message is encoded once however many
// requests send it.
type LongPoll struct {
	sub   pubsub.Subscriber
	topic pubsub.TopicFunc
	opts  LongPollOptions
	clock clock.Clock
	key   *encodingKey

	base     context.Context // canceled by Shutdown
	shutdown context.CancelFunc
	closing  atomic.Bool
	reqs     sync.WaitGroup
	held     atomic.Int64
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
	base, cancel := context.WithCancel(context.Background())
	return &LongPoll{
		sub: sub, topic: topic, opts: o, clock: clock.Or(o.Clock), key: &encodingKey{},
		base: base, shutdown: cancel,
	}
}

// Held reports how many requests are held, waiting for a message.
func (h *LongPoll) Held() int { return int(h.held.Load()) }

// Shutdown answers every held request at once, as if its wait had ended
// (200, no messages, the same cursor, Connection: close), refuses new
// requests with 503, and waits for the handlers to return or ctx to end.
// http.Server.Shutdown does not end held requests by itself: call this
// first, or register it with Server.RegisterOnShutdown.
func (h *LongPoll) Shutdown(ctx context.Context) error {
	h.closing.Store(true)
	h.shutdown()
	return waitGroup(ctx, &h.reqs)
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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

// batches lends requests a message buffer only while they answer, so a
// held request holds none.
var batches = sync.Pool{New: func() any { b := make([]pubsub.Message, 0, DefaultMax); return &b }}

// drained is an ended context: NextBatch with it takes what is waiting
// without waiting.
var drained = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (h *LongPoll) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeProblem(w, problem.New(http.StatusMethodNotAllowed, "long polling uses GET"))
		return
	}
	if h.closing.Load() {
		writeProblem(w, problemFor(ErrClosed))
		return
	}
	pattern, err := h.topic(r)
	if err != nil {
		writeProblem(w, pubsub.RefusalProblem(err))
		return
	}
	if err := pubsub.ValidatePattern(pattern); err != nil {
		writeProblem(w, problem.New(http.StatusBadRequest, err.Error()))
		return
	}
	q := r.URL.Query()
	wait, err := parseWait(q.Get("wait"), h.opts.DefaultWait, h.opts.MaxWait)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	limit, err := parseMax(q.Get("max"), min(DefaultMax, h.opts.MaxMessages), h.opts.MaxMessages)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	cursor := pubsub.Cursor(q.Get("cursor"))
	opts := []pubsub.SubscribeOption{pubsub.Overflow(pubsub.Disconnect)}
	switch from := q.Get("from"); {
	case from == "" || from == "now":
	case from != "oldest":
		writeProblem(w, problemFor(&ParamError{Name: "from", Value: from, Want: `"now" or "oldest"`}))
		return
	case cursor != "":
		writeProblem(w, problemFor(&ParamError{Name: "from", Value: from, Want: "no cursor with it: send a cursor or from=oldest, not both"}))
		return
	default:
		opts = append(opts, pubsub.FromOldest())
	}
	if cursor != "" {
		opts = append(opts, pubsub.After(cursor))
	}

	h.reqs.Add(1)
	defer h.reqs.Done()
	// The subscription lives as long as this call (deferred Close), so it
	// needs no context of its own.
	sub, err := h.sub.Subscribe(context.Background(), pattern, opts...)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	defer sub.Close()
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

	bp := getBatch(limit)
	defer putBatch(bp, limit)
	msgs, err := sub.NextBatch(drained, (*bp)[:0:limit])
	if errors.Is(err, pubsub.ErrGap) {
		var g *pubsub.GapError
		errors.As(err, &g)
		oldest, _ := sub.NextBatch(drained, (*bp)[:0:1])
		writeProblem(w, gone(cursor, g, oldest))
		return
	}
	if len(msgs) == 0 && errors.Is(err, context.Canceled) && wait > 0 {
		// Nothing yet: hold. The buffer goes back to the pool meanwhile.
		putBatch(bp, limit)
		var first pubsub.Message
		first, err = h.hold(r.Context(), sub, wait)
		bp = getBatch(limit)
		if err == nil {
			msgs = append((*bp)[:0:limit], first)
			if len(msgs) < limit {
				msgs, _ = sub.NextBatch(drained, msgs)
			}
		}
	}
	switch {
	case len(msgs) > 0:
		cursor = msgs[len(msgs)-1].Cursor
		h.respond(w, msgs, cursor, false)
	case r.Context().Err() != nil:
		// The client went away: nobody to answer.
	case errors.Is(err, pubsub.ErrClosed), errors.Is(err, errTooManyHeld):
		writeProblem(w, problemFor(err))
	default:
		// The wait ended, Shutdown, nothing to wait for (wait=0), or
		// ErrSlowConsumer (the next request resumes from history): no
		// messages, the same cursor.
		h.respond(w, nil, cursor, h.base.Err() != nil)
	}
}

func getBatch(limit int) *[]pubsub.Message {
	bp := batches.Get().(*[]pubsub.Message)
	if cap(*bp) < limit {
		*bp = make([]pubsub.Message, 0, limit)
	}
	return bp
}

func putBatch(bp *[]pubsub.Message, limit int) {
	clear((*bp)[:limit])
	batches.Put(bp)
}

// hold waits for a message, the end of the wait, the client or Shutdown.
func (h *LongPoll) hold(rctx context.Context, sub pubsub.Subscription, wait time.Duration) (pubsub.Message, error) {
	if n := h.held.Add(1); n > int64(h.opts.MaxHeld) {
		h.held.Add(-1)
		return pubsub.Message{}, errTooManyHeld
	}
	defer h.held.Add(-1)
	ctx, cancel := context.WithCancel(rctx)
	defer cancel()
	stop := context.AfterFunc(h.base, cancel)
	defer stop()
	t := h.clock.AfterFunc(jitter(wait), cancel)
	defer t.Stop()
	return sub.Next(ctx)
}

var errTooManyHeld = errors.New("poll: too many held requests")

// jitter shortens d by a random amount of up to a quarter.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

func (h *LongPoll) respond(w http.ResponseWriter, msgs []pubsub.Message, cursor pubsub.Cursor, closing bool) {
	n := 32 + len(cursor)
	for i := range msgs {
		n += len(msgs[i].Encoded(h.key, h.encode)) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"messages":[`...)
	for i := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, msgs[i].Encoded(h.key, h.encode)...)
	}
	b = append(b, `],"cursor":`...)
	b = strconv.AppendQuote(b, string(cursor)) // cursors are ASCII without quotes or escapes
	b = append(b, "}\n"...)
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	if closing {
		hdr.Set("Connection", "close")
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

package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/internal/problem"
)

// Defaults and bounds of the HTTP adapter.
const (
	DefaultHTTPMaxBodySize = 1 << 20
	DefaultHTTPMaxWait     = 20 * time.Second
)

// BatchContentType is the media type of a batch enqueue body:
//
//	{"messages": [{"body": {...any JSON...}, "body_base64": "...",
//	  "header": {"k": "v"}, "delay": "30s", "run_at": "2030-01-02T15:04:05Z",
//	  "dedup_key": "order-42", "priority": 1}]}
//
// "body" is any JSON value, stored as its JSON text; "body_base64" carries
// arbitrary bytes instead.
const BatchContentType = "application/vnd.switchboard.queue-batch+json"

// Op names what an HTTP request does, for the Authorize hook.
type Op string

// The operations of the HTTP adapter.
const (
	OpEnqueue Op = "enqueue"
	OpReceive Op = "receive" // receive, ack, nack, extend, dead-letter
	OpAdmin   Op = "admin"   // stats, list dead letters, redrive, pause, resume
)

// Errors an Authorize hook returns to refuse a request.
var (
	ErrUnauthorized = errors.New("queue: unauthorized") // 401
	ErrForbidden    = errors.New("queue: forbidden")    // 403
)

// HandlerOptions configures NewHandler.
type HandlerOptions struct {
	// Queues are the queues served, by name; a request for another gets
	// 404. Required.
	Queues []*Queue
	// Authorize, if not nil, is called before every request with the
	// queue's name and the operation. ErrUnauthorized refuses with 401; any
	// other error with 403 (an error with a method HTTPStatus() int chooses
	// its own status).
	Authorize func(r *http.Request, queue string, op Op) error
	// MaxBodySize bounds a request body; a larger one gets 413. Zero means
	// DefaultHTTPMaxBodySize (1 MiB).
	MaxBodySize int64
	// MaxWait bounds the wait of a receive (?wait=); a longer one gets 400.
	// Zero means DefaultHTTPMaxWait (20s); at most MaxWait.
	MaxWait time.Duration
}

// NewHandler returns the net/http adapter, for producers and consumers in
// other languages. Mount it at "/queues/":
//
//	POST /queues/{queue}/messages        enqueue; 202 {"id"} (or {"messages":[...]} for a batch)
//	POST /queues/{queue}/receive?max=&wait=&lease=   long-poll receive; 200 {"messages":[...]}
//	POST /queues/{queue}/ack             {"receipt"}; 204. Or {"receipts":[...]}: 200
//	                                     {"acked", "failed":[{"index", "receipt", "status", "detail"}]}
//	POST /queues/{queue}/nack            {"receipt", "delay", "error"}; 204
//	POST /queues/{queue}/extend          {"receipt", "lease"}; 204
//	POST /queues/{queue}/dead            {"receipt", "error"}: dead-letter; 204
//	GET  /queues/{queue}                 stats
//	GET  /queues/{queue}/dead?cursor=&limit=   {"messages":[...], "next"}
//	POST /queues/{queue}/dead/redrive    {"ids":[...]} or {"all":true}; 200 {"redriven"}
//	POST /queues/{queue}/pause, /resume  204
//
// A single enqueue takes the raw body as the message; the request's
// Content-Type travels in the header under "Content-Type", and options come
// from the headers Queue-Delay, Queue-Run-At (RFC 3339), Queue-Dedup-Key,
// Queue-Priority and Queue-Header-<Name>. A body of type BatchContentType
// enqueues a batch with the options as fields. Durations are Go durations
// ("1m30s") or whole seconds ("90"). Received bodies are base64 in JSON.
//
// Errors are RFC 9457 problem details: 400 for a malformed body or a bad
// parameter, 401/403 from Authorize, 404 for an unknown queue, 409 for a
// stale receipt, 413 for a body too large, 503 for a full queue or a closed
// backend.
func NewHandler(opts HandlerOptions) http.Handler {
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = DefaultHTTPMaxBodySize
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultHTTPMaxWait
	}
	opts.MaxWait = min(opts.MaxWait, MaxWait)
	h := &httpHandler{opts: opts, queues: make(map[string]*Queue), mux: http.NewServeMux()}
	for _, q := range opts.Queues {
		h.queues[q.Name()] = q
	}
	routes := []struct {
		pattern string
		op      Op
		serve   func(w http.ResponseWriter, r *http.Request, q *Queue) error
	}{
		{"POST /queues/{queue}/messages", OpEnqueue, h.enqueue},
		{"POST /queues/{queue}/receive", OpReceive, h.receive},
		{"POST /queues/{queue}/ack", OpReceive, h.ack},
		{"POST /queues/{queue}/nack", OpReceive, h.nack},
		{"POST /queues/{queue}/extend", OpReceive, h.extend},
		{"POST /queues/{queue}/dead", OpReceive, h.deadLetter},
		{"GET /queues/{queue}", OpAdmin, h.stats},
		{"GET /queues/{queue}/dead", OpAdmin, h.listDead},
		{"POST /queues/{queue}/dead/redrive", OpAdmin, h.redrive},
		{"POST /queues/{queue}/pause", OpAdmin, h.pause},
		{"POST /queues/{queue}/resume", OpAdmin, h.resume},
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "no such resource: see queue.NewHandler for the routes"))
	})
	for _, rt := range routes {
		h.mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("queue")
			q, ok := h.queues[name]
			if !ok {
				problem.Write(w, problem.New(http.StatusNotFound, fmt.Sprintf("unknown queue %q", name)))
				return
			}
			if h.opts.Authorize != nil {
				if err := h.opts.Authorize(r, name, rt.op); err != nil {
					problem.Write(w, refusal(err))
					return
				}
			}
			if err := rt.serve(w, r, q); err != nil {
				if r.Context().Err() != nil {
					return // the client went away
				}
				problem.Write(w, problemFor(err))
			}
		})
	}
	return h
}

type httpHandler struct {
	opts   HandlerOptions
	queues map[string]*Queue
	mux    *http.ServeMux
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// badRequest is an error the adapter found in a request.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, a ...any) error { return &badRequest{fmt.Sprintf(format, a...)} }

// tooLarge is a request body over MaxBodySize.
type tooLarge struct{ limit int64 }

func (e *tooLarge) Error() string { return fmt.Sprintf("body larger than %d bytes", e.limit) }

// problemFor maps an error to its problem details: the one place where
// errors become HTTP statuses.
func problemFor(err error) problem.Details {
	var bad *badRequest
	var big *tooLarge
	var inv *InvalidError
	switch {
	case errors.As(err, &bad):
		return problem.New(http.StatusBadRequest, bad.msg)
	case errors.As(err, &big):
		return problem.New(http.StatusRequestEntityTooLarge, big.Error())
	case errors.As(err, &inv):
		d := problem.New(http.StatusBadRequest, inv.Error())
		d.Extensions = map[string]any{"argument": inv.Arg}
		return d
	case errors.Is(err, ErrStaleReceipt):
		return problem.New(http.StatusConflict, "stale receipt: the lease has passed or the message was delivered again")
	case errors.Is(err, ErrTooLarge):
		return problem.New(http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, ErrQueueFull), errors.Is(err, ErrTooManyQueues):
		return problem.New(http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrClosed):
		return problem.New(http.StatusServiceUnavailable, "the queue backend is closed")
	default:
		return problem.New(http.StatusInternalServerError, "the queue backend failed")
	}
}

func refusal(err error) problem.Details {
	var sc interface{ HTTPStatus() int }
	switch {
	case errors.As(err, &sc) && sc.HTTPStatus() >= 400 && sc.HTTPStatus() <= 599:
		return problem.New(sc.HTTPStatus(), err.Error())
	case errors.Is(err, ErrUnauthorized):
		return problem.New(http.StatusUnauthorized, "authentication required")
	default:
		return problem.New(http.StatusForbidden, "not allowed")
	}
}

func (h *httpHandler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > h.opts.MaxBodySize {
		return nil, &tooLarge{h.opts.MaxBodySize}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodySize))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, &tooLarge{h.opts.MaxBodySize}
		}
		return nil, badf("reading the body: %v", err)
	}
	return body, nil
}

// readJSON decodes a JSON object body into v, refusing unknown fields.
func (h *httpHandler) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := h.readBody(w, r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badf("malformed JSON body: %v", err)
	}
	if dec.More() {
		return badf("malformed JSON body: more than one value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// parseDuration reads a Go duration ("1m30s") or whole seconds ("90").
func parseDuration(what, s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(MaxDelay/time.Second) {
			return 0, badf("%s: %q is out of range", what, s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, badf("%s: %q is neither a duration (\"1m30s\") nor whole seconds", what, s)
	}
	return d, nil
}

// jsonDuration is a duration in a JSON body: a string as parseDuration
// reads, or a number of seconds.
type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err := json.Unmarshal(b, &secs); err != nil {
			return errors.New("a duration is a string like \"30s\" or a number of seconds")
		}
		*d = jsonDuration(time.Duration(secs * float64(time.Second)))
		return nil
	}
	v, err := parseDuration("duration", s)
	*d = jsonDuration(v)
	return err
}

type batchMessage struct {
	Body       json.RawMessage   `json:"body"`
	BodyBase64 []byte            `json:"body_base64"`
	Header     map[string]string `json:"header"`
	Delay      jsonDuration      `json:"delay"`
	RunAt      time.Time         `json:"run_at"`
	DedupKey   string            `json:"dedup_key"`
	Priority   int               `json:"priority"`
}

func (h *httpHandler) enqueue(w http.ResponseWriter, r *http.Request, q *Queue) error {
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, BatchContentType) {
		var req struct {
			Messages []batchMessage `json:"messages"`
		}
		if err := h.readJSON(w, r, &req); err != nil {
			return err
		}
		if len(req.Messages) == 0 {
			return badf("no messages in the batch")
		}
		msgs := make([]Message, len(req.Messages))
		for i, bm := range req.Messages {
			body := []byte(bm.Body)
			if bm.BodyBase64 != nil {
				if bm.Body != nil {
					return badf("message %d: set body or body_base64, not both", i)
				}
				body = bm.BodyBase64
			}
			msgs[i] = Message{Body: body, Header: bm.Header, Delay: time.Duration(bm.Delay), RunAt: bm.RunAt, DedupKey: bm.DedupKey, Priority: bm.Priority}
		}
		res, err := q.EnqueueBatch(r.Context(), msgs)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"messages": res})
		return nil
	}
	m, err := messageFromHeaders(r.Header)
	if err != nil {
		return err
	}
	if m.Body, err = h.readBody(w, r); err != nil {
		return err
	}
	res, err := q.Enqueue(r.Context(), m)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, res)
	return nil
}

func messageFromHeaders(hd http.Header) (Message, error) {
	var m Message
	var err error
	if v := hd.Get("Queue-Delay"); v != "" {
		if m.Delay, err = parseDuration("Queue-Delay", v); err != nil {
			return m, err
		}
	}
	if v := hd.Get("Queue-Run-At"); v != "" {
		if m.RunAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return m, badf("Queue-Run-At: %q is not an RFC 3339 time", v)
		}
	}
	if v := hd.Get("Queue-Priority"); v != "" {
		if m.Priority, err = strconv.Atoi(v); err != nil {
			return m, badf("Queue-Priority: %q is not an integer", v)
		}
	}
	m.DedupKey = hd.Get("Queue-Dedup-Key")
	for k, vs := range hd {
		if name, ok := strings.CutPrefix(k, "Queue-Header-"); ok && len(vs) > 0 {
			if m.Header == nil {
				m.Header = make(map[string]string)
			}
			m.Header[name] = vs[0]
		}
	}
	if ct := hd.Get("Content-Type"); ct != "" {
		if m.Header == nil {
			m.Header = make(map[string]string)
		}
		m.Header["Content-Type"] = ct
	}
	return m, nil
}

// httpDelivery is a Delivery in a receive response.
type httpDelivery struct {
	ID         string            `json:"id"`
	Body       []byte            `json:"body"`
	Header     map[string]string `json:"header,omitempty"`
	Priority   int               `json:"priority,omitempty"`
	Attempt    int               `json:"attempt"`
	EnqueuedAt time.Time         `json:"enqueued_at"`
	LastError  string            `json:"last_error,omitempty"`
	Receipt    Receipt           `json:"receipt"`
}

func (h *httpHandler) receive(w http.ResponseWriter, r *http.Request, q *Queue) error {
	var opts ReceiveOptions
	qv := r.URL.Query()
	if v := qv.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return badf("max: %q is not an integer", v)
		}
		opts.Max = n
		if n == 0 {
			return badf("max: must be at least 1")
		}
	}
	var err error
	if v := qv.Get("wait"); v != "" {
		if opts.Wait, err = parseDuration("wait", v); err != nil {
			return err
		}
		if opts.Wait > h.opts.MaxWait {
			return badf("wait: %v is longer than %v", opts.Wait, h.opts.MaxWait)
		}
	}
	if v := qv.Get("lease"); v != "" {
		if opts.Lease, err = parseDuration("lease", v); err != nil {
			return err
		}
		if opts.Lease == 0 {
			return badf("lease: must be positive")
		}
	}
	ds, err := q.Receive(r.Context(), opts)
	if err != nil {
		return err
	}
	out := make([]httpDelivery, len(ds))
	for i, d := range ds {
		out[i] = httpDelivery(d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": out})
	return nil
}

type receiptRequest struct {
	Receipt Receipt      `json:"receipt"`
	Delay   jsonDuration `json:"delay"`
	Lease   jsonDuration `json:"lease"`
	Error   string       `json:"error"`
}

func (h *httpHandler) readReceipt(w http.ResponseWriter, r *http.Request) (receiptRequest, error) {
	var req receiptRequest
	if err := h.readJSON(w, r, &req); err != nil {
		return req, err
	}
	if req.Receipt == "" {
		return req, badf("no receipt in the body")
	}
	return req, nil
}

func noContent(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type ackRequest struct {
	Receipt  Receipt   `json:"receipt"`
	Receipts []Receipt `json:"receipts"`
}

// batchFailure is one receipt of a batch ack that did not hold.
type batchFailure struct {
	Index   int     `json:"index"`
	Receipt Receipt `json:"receipt"`
	Status  int     `json:"status"`
	Detail  string  `json:"detail"`
}

func (h *httpHandler) ack(w http.ResponseWriter, r *http.Request, q *Queue) error {
	var req ackRequest
	if err := h.readJSON(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Receipt != "" && req.Receipts != nil:
		return badf("give either receipt or receipts, not both")
	case req.Receipt != "":
		if err := q.Ack(r.Context(), req.Receipt); err != nil {
			return err
		}
		return noContent(w)
	case len(req.Receipts) == 0:
		return badf("no receipt in the body")
	}
	err := q.AckBatch(r.Context(), req.Receipts...)
	var be *BatchError
	if err != nil && !errors.As(err, &be) {
		return err // the batch as a whole: too many receipts, an empty one, a closed backend
	}
	failed := []batchFailure{}
	if be != nil {
		for i, e := range be.Errs {
			if e != nil {
				p := problemFor(e)
				failed = append(failed, batchFailure{Index: i, Receipt: req.Receipts[i], Status: p.Status, Detail: p.Detail})
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"acked": len(req.Receipts) - len(failed), "failed": failed})
	return nil
}

func (h *httpHandler) nack(w http.ResponseWriter, r *http.Request, q *Queue) error {
	req, err := h.readReceipt(w, r)
	if err != nil {
		return err
	}
	if err := q.Nack(r.Context(), req.Receipt, time.Duration(req.Delay), req.Error); err != nil {
		return err
	}
	return noContent(w)
}

func (h *httpHandler) extend(w http.ResponseWriter, r *http.Request, q *Queue) error {
	req, err := h.readReceipt(w, r)
	if err != nil {
		return err
	}
	lease := time.Duration(req.Lease)
	if lease == 0 {
		lease = DefaultLease
	}
	if err := q.Extend(r.Context(), req.Receipt, lease); err != nil {
		return err
	}
	return noContent(w)
}

func (h *httpHandler) deadLetter(w http.ResponseWriter, r *http.Request, q *Queue) error {
	req, err := h.readReceipt(w, r)
	if err != nil {
		return err
	}
	if err := q.DeadLetter(r.Context(), req.Receipt, req.Error); err != nil {
		return err
	}
	return noContent(w)
}

func (h *httpHandler) stats(w http.ResponseWriter, r *http.Request, q *Queue) error {
	s, err := q.Stats(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Queue string `json:"queue"`
		Stats
		OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	}{q.Name(), s, s.OldestAge.Seconds()})
	return nil
}

func (h *httpHandler) listDead(w http.ResponseWriter, r *http.Request, q *Queue) error {
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return badf("limit: %q is not a positive integer", v)
		}
		limit = n
	}
	ms, next, err := q.Dead(r.Context(), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": ms, "next": next})
	return nil
}

func (h *httpHandler) redrive(w http.ResponseWriter, r *http.Request, q *Queue) error {
	var req struct {
		IDs []string `json:"ids"`
		All bool     `json:"all"`
	}
	if err := h.readJSON(w, r, &req); err != nil {
		return err
	}
	if req.All == (len(req.IDs) > 0) {
		return badf(`say which dead letters: {"ids": [...]} or {"all": true}`)
	}
	n, err := q.Redrive(r.Context(), req.IDs...)
	if err != nil && n == 0 {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"redriven": n})
	return nil
}

func (h *httpHandler) pause(w http.ResponseWriter, r *http.Request, q *Queue) error {
	if err := q.Pause(r.Context()); err != nil {
		return err
	}
	return noContent(w)
}

func (h *httpHandler) resume(w http.ResponseWriter, r *http.Request, q *Queue) error {
	if err := q.Resume(r.Context()); err != nil {
		return err
	}
	return noContent(w)
}

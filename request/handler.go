package request

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/internal/problem"
)

// Defaults and bounds of HandlerOptions.
const (
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxTimeout     = time.Minute
	DefaultDeadlineMargin = 5 * time.Millisecond
)

// TimeoutHeader carries the caller's remaining time, in whole milliseconds
// rounded down, from a Client to a Handler: the handler's context gets that
// deadline, less a margin, and any call it makes passes on what is left.
const TimeoutHeader = "Request-Timeout-Ms"

// HandlerOptions configures NewHandler. A nil *HandlerOptions, and every
// zero field, means the default.
type HandlerOptions struct {
	// Codecs are the body formats served, matched against the request's
	// Content-Type (415 for another) and the Accept header (406 when it
	// accepts none); the first is used when the caller does not say.
	// Default: JSON{DisallowUnknownFields: true}.
	Codecs []Codec
	// MaxBodyBytes bounds the request body; a larger one gets 413 before
	// the handler runs. Default DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// Status is the status of a successful response. Default 200.
	Status int
	// ValidationStatus is the status of a request whose Validate method
	// fails: 400 (the default) or 422. Any other value means 400.
	ValidationStatus int
	// MaxTimeout bounds the handler's deadline: the caller's deadline
	// (TimeoutHeader) is capped at it, and a caller that sends none gets
	// it. Default DefaultMaxTimeout (1 minute). Negative: no cap, and no
	// deadline for a caller that sends none. The deadline's timer is
	// made the first time the handler's context is asked for Done or
	// Err; until then the deadline is a time.Time.
	MaxTimeout time.Duration
	// DeadlineMargin is taken off the caller's deadline, so the handler
	// answers 504 before the caller gives up. Default
	// DefaultDeadlineMargin (5ms); negative means none.
	DeadlineMargin time.Duration
	// Interceptors run around the handler function, the first outermost.
	Interceptors []Interceptor
	// Logger receives panics (with their stack) and the text of internal
	// errors, which the caller never sees. Default slog.Default().
	Logger *slog.Logger
}

// NewHandler returns an http.Handler that decodes a Req from the request
// body, calls fn, and encodes the Resp it returns, or writes its error as
// RFC 9457 problem details.
//
// Mount it on any ServeMux pattern, methods and wildcards included; fn
// reads path values with [PathValue]. A request without a body (a GET, or
// an empty POST) leaves Req at its zero value; a body without a
// Content-Type is read with the first codec. When Req (or *Req) has a
// method Validate() error, it runs before fn: a failure is 400 (or 422,
// see ValidationStatus) with the field errors of an [Invalid] error.
//
// The status of an error is its Code's ([Code.HTTPStatus]); a plain error
// is Internal, and its text stays in the server log. A handler whose
// deadline passed answers 504; a caller that went away is logged as 499. A
// panic in fn becomes a 500 and its stack is logged; nothing crashes.
func NewHandler[Req, Resp any](fn func(ctx context.Context, req Req) (Resp, error), opts *HandlerOptions) http.Handler {
	h := &handler[Req, Resp]{fn: fn}
	if opts != nil {
		h.HandlerOptions = *opts
	}
	o := &h.HandlerOptions
	if len(o.Codecs) == 0 {
		o.Codecs = []Codec{JSON{DisallowUnknownFields: true}}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Status == 0 {
		o.Status = http.StatusOK
	}
	if o.ValidationStatus != http.StatusUnprocessableEntity {
		o.ValidationStatus = http.StatusBadRequest
	}
	if o.MaxTimeout == 0 {
		o.MaxTimeout = DefaultMaxTimeout
	}
	if o.DeadlineMargin == 0 {
		o.DeadlineMargin = DefaultDeadlineMargin
	}
	if o.DeadlineMargin < 0 {
		o.DeadlineMargin = 0
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h.accept = contentTypes(o.Codecs)
	for _, c := range o.Codecs {
		h.contentType = append(h.contentType, []string{c.ContentType()})
	}
	return h
}

type handler[Req, Resp any] struct {
	HandlerOptions
	fn     func(context.Context, Req) (Resp, error)
	accept string // the supported media types, for 415 answers
	// contentType holds the Content-Type header value of each codec,
	// shared by every response: net/http and this package only ever
	// replace a header's values, never write into them.
	contentType [][]string
}

// serverCall is a handler's context: its request's, plus the request, the
// response writer and the handler's deadline, in one allocation.
//
// The deadline costs nothing until somebody asks: a handler that never
// calls Done or Err (nor derives a context that does) gets no timer, and
// its request's context no child to register and remove. The first Done
// or Err builds the timer-backed context that context.WithDeadline gives,
// and from then on the serverCall answers through it. Once the handler
// returned it is canceled, as a WithDeadline's cancel would leave it;
// one first asked then (by a goroutine the handler left behind) reports
// DeadlineExceeded if its deadline has passed by that time, Canceled if
// not. Values that Cause and the context package's own bookkeeping look
// up always follow Err or Done, so they see the built context too.
type serverCall struct {
	parent   context.Context // the request's
	r        *http.Request
	w        http.ResponseWriter
	deadline time.Time // zero: none, the request's context is the whole answer

	built atomic.Bool // ctx is set; a load orders the reads of ctx after its writes
	mu    sync.Mutex
	ctx   context.Context    // guarded by mu until built
	stop  context.CancelFunc // guarded by mu
	ended bool               // guarded by mu: the handler returned
}

func (c *serverCall) Deadline() (time.Time, bool) {
	if c.deadline.IsZero() {
		return c.parent.Deadline()
	}
	return c.deadline, true
}

func (c *serverCall) Done() <-chan struct{} {
	if c.deadline.IsZero() {
		return c.parent.Done()
	}
	return c.timed().Done()
}

func (c *serverCall) Err() error {
	if c.deadline.IsZero() {
		return c.parent.Err()
	}
	return c.timed().Err()
}

func (c *serverCall) Value(key any) any {
	if key == (serverCallKey{}) {
		return c
	}
	if c.built.Load() {
		return c.ctx.Value(key)
	}
	return c.parent.Value(key)
}

func (c *serverCall) String() string { return "request handler context" }

// timed returns the timer-backed context, building it on first use.
func (c *serverCall) timed() context.Context {
	if c.built.Load() {
		return c.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.built.Load() {
		return c.ctx
	}
	c.ctx, c.stop = context.WithDeadline(c.parent, c.deadline)
	if c.ended {
		c.stop()
	}
	c.built.Store(true)
	return c.ctx
}

// end cancels the context once the handler returned, as the cancel of a
// context.WithDeadline would: now if it was built, once it is otherwise.
func (c *serverCall) end() {
	if c.deadline.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.built.Load() {
		c.stop()
		return
	}
	c.ended = true
}

type serverCallKey struct{}

// HTTPRequest returns the HTTP request a handler function is serving, or
// nil when ctx is not a handler's.
func HTTPRequest(ctx context.Context) *http.Request {
	if sc, ok := ctx.Value(serverCallKey{}).(*serverCall); ok {
		return sc.r
	}
	return nil
}

// PathValue returns the value of the named path wildcard of the request a
// handler function is serving ("id" for "GET /greetings/{id}"), or "".
func PathValue(ctx context.Context, name string) string {
	if r := HTTPRequest(ctx); r != nil {
		return r.PathValue(name)
	}
	return ""
}

// ResponseHeader returns the header of the response a handler function is
// writing, to set Location or Cache-Control. Outside a handler it returns
// a fresh header that goes nowhere.
func ResponseHeader(ctx context.Context) http.Header {
	if sc, ok := ctx.Value(serverCallKey{}).(*serverCall); ok {
		return sc.w.Header()
	}
	return http.Header{}
}

func (h *handler[Req, Resp]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sc := &serverCall{parent: r.Context(), r: r, w: w}
	if err := h.deadline(sc, r); err != nil {
		h.writeError(w, r, r.Context(), err)
		return
	}
	defer sc.end()
	var ctx context.Context = sc

	outIdx := negotiate(h.Codecs, r.Header.Get("Accept"))
	if outIdx < 0 {
		h.writeError(w, r, ctx, withStatus(http.StatusNotAcceptable, InvalidArgument,
			"no acceptable response type; this endpoint answers with "+h.accept))
		return
	}

	var req Req
	if err := h.decode(w, r, &req); err != nil {
		h.writeError(w, r, ctx, err)
		return
	}
	if err := h.validate(&req); err != nil {
		h.writeError(w, r, ctx, err)
		return
	}

	resp, err := h.call(ctx, r, req)
	if err != nil {
		h.writeError(w, r, ctx, err)
		return
	}
	body, enc, err := encode(h.Codecs[outIdx], resp)
	if err != nil {
		h.writeError(w, r, ctx, fmt.Errorf("encoding the response: %w", err))
		return
	}
	w.Header()["Content-Type"] = h.contentType[outIdx]
	w.WriteHeader(h.Status)
	_, _ = w.Write(body)
	enc.release()
}

// deadline sets sc's deadline: the caller's TimeoutHeader, capped at
// MaxTimeout, or the request context's own when that is sooner.
func (h *handler[Req, Resp]) deadline(sc *serverCall, r *http.Request) error {
	d := h.MaxTimeout
	if v := r.Header.Get(TimeoutHeader); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return Errorf(InvalidArgument, "header %s: want whole milliseconds, got %q", TimeoutHeader, v)
		}
		asked := time.Duration(ms)*time.Millisecond - h.DeadlineMargin
		if ms > int64(24*time.Hour/time.Millisecond) {
			asked = 24 * time.Hour
		}
		if d < 0 || asked < d {
			d = asked
		}
	}
	if d < 0 && h.MaxTimeout < 0 && r.Header.Get(TimeoutHeader) == "" {
		return nil
	}
	if d <= 0 {
		return &Error{Code: DeadlineExceeded, Message: "the caller's deadline leaves no time to answer"}
	}
	sc.deadline = time.Now().Add(d)
	if pd, ok := sc.parent.Deadline(); ok && pd.Before(sc.deadline) {
		sc.deadline = pd
	}
	return nil
}

// decode reads and unmarshals the body into req, bounded by MaxBodyBytes.
func (h *handler[Req, Resp]) decode(w http.ResponseWriter, r *http.Request, req *Req) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil
	}
	in := h.Codecs[0] // a body without a Content-Type is read as the first codec's
	if ct := r.Header.Get("Content-Type"); ct != "" {
		in = codecFor(h.Codecs, ct)
	}
	if in == nil {
		w.Header().Set("Accept", h.accept)
		return withStatus(http.StatusUnsupportedMediaType, InvalidArgument, fmt.Sprintf(
			"unsupported Content-Type %q; this endpoint takes %s", r.Header.Get("Content-Type"), h.accept))
	}
	if r.ContentLength > h.MaxBodyBytes {
		return tooLarge(h.MaxBodyBytes)
	}
	buf := getBuffer()
	defer putBuffer(buf)
	n, err := readLimited(buf, r.Body, h.MaxBodyBytes)
	if err != nil {
		return Errorf(InvalidArgument, "reading the body: %v", err)
	}
	if n > h.MaxBodyBytes {
		return tooLarge(h.MaxBodyBytes)
	}
	if n == 0 {
		return nil
	}
	if err := in.Unmarshal(buf.Bytes(), req); err != nil {
		return decodeError(err)
	}
	return nil
}

// readLimited reads r into buf until EOF or until more than limit bytes
// have been read, and returns how many it read. Unlike io.LimitReader it
// allocates nothing beyond buf's growth.
func readLimited(buf *bytes.Buffer, r io.Reader, limit int64) (int64, error) {
	var n int64
	for n <= limit {
		buf.Grow(512)
		b := buf.AvailableBuffer()
		b = b[:min(int64(cap(b)), limit+1-n)]
		m, err := r.Read(b)
		buf.Write(b[:m])
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func tooLarge(limit int64) *Error {
	return withStatus(http.StatusRequestEntityTooLarge, InvalidArgument,
		fmt.Sprintf("body larger than %d bytes", limit))
}

type validator interface{ Validate() error }

func (h *handler[Req, Resp]) validate(req *Req) error {
	// *Req's method set holds Req's value methods too.
	v, ok := any(req).(validator)
	if !ok {
		return nil
	}
	err := v.Validate()
	if err == nil {
		return nil
	}
	e := &Error{Code: InvalidArgument, Message: err.Error(), Err: err}
	var ve *Error
	if errors.As(err, &ve) {
		e.Message, e.Fields = ve.Message, ve.Fields
	}
	e.status = h.ValidationStatus
	return e
}

// call runs fn through the interceptors and turns a panic into an
// Internal error whose stack goes to the log.
func (h *handler[Req, Resp]) call(ctx context.Context, r *http.Request, req Req) (resp Resp, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(h.Logger, p)
		}
	}()
	if len(h.Interceptors) == 0 {
		return h.fn(ctx, req)
	}
	return h.intercepted(ctx, r, req)
}

// intercepted runs fn through the interceptors. It is call's other half,
// so that a handler without interceptors does not pay for the closure.
func (h *handler[Req, Resp]) intercepted(ctx context.Context, r *http.Request, req Req) (resp Resp, err error) {
	info := &CallInfo{Side: ServerSide, Method: r.Method, Path: r.URL.Path, Pattern: r.Pattern, Header: r.Header, Request: req, Status: h.Status}
	err = chain(h.Interceptors, info, func(ctx context.Context) error {
		var err error
		resp, err = h.fn(ctx, req)
		if err == nil {
			info.Response = resp
		}
		return err
	})(ctx)
	return resp, err
}

// panicError logs a recovered panic with its stack and returns the error
// the caller gets. http.ErrAbortHandler keeps its meaning: it is panicked
// again for net/http to abort the response.
func panicError(log *slog.Logger, p any) error {
	if p == http.ErrAbortHandler {
		panic(p)
	}
	log.Error("request: handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return &Error{Code: Internal, Message: "handler panicked", Err: fmt.Errorf("panic: %v", p)}
}

// writeError is the one place an error becomes a response.
func (h *handler[Req, Resp]) writeError(w http.ResponseWriter, r *http.Request, ctx context.Context, err error) {
	writeProblem(w, r, h.Logger, ctx, err)
}

func writeProblem(w http.ResponseWriter, r *http.Request, log *slog.Logger, ctx context.Context, err error) {
	e := asError(err)
	code := e.code()
	switch {
	case r.Context().Err() != nil && (code == Internal || code == Canceled || code == DeadlineExceeded):
		// The caller went away: nobody reads this answer, but the log
		// says 499, not 504 or 500.
		e = &Error{Code: Canceled, Message: "the caller went away", Err: err}
	case ctx.Err() != nil && (code == Internal || code == Canceled):
		e = &Error{Code: DeadlineExceeded, Message: "the handler's deadline passed", Err: err}
	case code == DeadlineExceeded && e.Message == "":
		e = &Error{Code: DeadlineExceeded, Message: "the handler's deadline passed", Err: err}
	}
	code = e.code()
	status := e.HTTPStatus()
	detail := e.Message
	if code == Internal && !e.Public {
		detail = "internal error"
	}
	switch {
	case code == Canceled:
		log.Info("request: caller went away", "method", r.Method, "path", r.URL.Path, "status", status)
	case status >= 500:
		log.Error("request: failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", string(code), "error", err.Error())
	}
	d := problem.Details{Type: e.Type, Title: e.Title, Status: status, Detail: detail, Instance: e.Instance}
	if d.Instance == "" {
		d.Instance = r.URL.Path
	}
	d.Extensions = map[string]any{"code": string(code)}
	if len(e.Fields) > 0 {
		d.Extensions["errors"] = e.Fields
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterHeader(e.RetryAfter))
	}
	problem.Write(w, d)
}

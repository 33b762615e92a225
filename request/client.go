package request

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/internal/problem"
)

// IdempotencyKeyHeader is the request header that names an operation, so
// that a server with the [Idempotency] middleware runs it once however
// often it is retried, and so that a Client may retry a POST.
const IdempotencyKeyHeader = "Idempotency-Key"

// Doer sends one HTTP request. *http.Client is one; [InMemory] calls a
// handler directly; [Hedge] and [Breaker] wrap another Doer.
type Doer interface {
	Do(r *http.Request) (*http.Response, error)
}

// Defaults and bounds of ClientOptions and RetryPolicy.
const (
	DefaultMaxResponseBytes = 4 << 20
	DefaultMaxAttempts      = 3
	DefaultBaseDelay        = 50 * time.Millisecond
	DefaultMaxDelay         = 2 * time.Second
	DefaultMaxRetryAfter    = 30 * time.Second
)

// ClientOptions configures NewClient. A nil *ClientOptions, and every zero
// field, means the default.
type ClientOptions struct {
	// Doer sends the requests. Default http.DefaultClient.
	Doer Doer
	// Codec encodes requests and decodes responses. Default JSON{}.
	Codec Codec
	// Retry says how often and how far apart a call is retried.
	Retry RetryPolicy
	// Budget bounds retries across all calls of the client (or of every
	// client that shares it). Default: a Budget of its own with
	// BudgetOptions' defaults.
	Budget *Budget
	// IdempotencyKeys gives every POST and PATCH a fresh Idempotency-Key
	// (the same for all attempts of one call), so that they too are
	// retried. Off by default: the server must run the Idempotency
	// middleware for the key to mean anything.
	IdempotencyKeys bool
	// Interceptors run around every call, the first outermost; they see
	// one call, however many attempts it takes.
	Interceptors []Interceptor
	// MaxResponseBytes bounds a response body; a larger one fails the call
	// with Internal. Default DefaultMaxResponseBytes (4 MiB).
	MaxResponseBytes int64
	// Clock paces the retries. Default the real clock.
	Clock clock.Clock
}

// RetryPolicy configures retries. A call is retried only when it is safe
// (an idempotent method — GET, HEAD, OPTIONS, PUT, DELETE — or an
// Idempotency-Key header) and the failure is transient (the request never
// got an answer, or Unavailable, TooManyRequests, or any answer with a
// Retry-After); never once the context has ended, never beyond the
// Budget.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts of one call, the first included.
	// Default DefaultMaxAttempts (3); 1 turns retries off.
	MaxAttempts int
	// BaseDelay and MaxDelay shape the exponential backoff with full
	// jitter: the wait before retry n is random in
	// [0, min(MaxDelay, BaseDelay*2^n)]. Defaults DefaultBaseDelay (50ms)
	// and DefaultMaxDelay (2s).
	BaseDelay, MaxDelay time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits for; an
	// answer that asks for longer ends the call with that answer.
	// Default DefaultMaxRetryAfter (30s). A Retry-After is a minimum: the
	// wait is the larger of it and the backoff.
	MaxRetryAfter time.Duration
	// Rand, when set, replaces the jitter's random source (values in
	// [0, 1)): tests use it to make waits exact.
	Rand func() float64
}

// Client calls typed endpoints of one server. It is safe for concurrent
// use; make one per server and reuse it.
type Client struct {
	base        string
	doer        Doer
	codec       Codec
	backoff     backoff.Policy
	maxAttempts int
	maxRA       time.Duration
	budget      *Budget
	autoKeys    bool
	ics         []Interceptor
	maxResp     int64
	clock       clock.Clock
	accept      []string
	contentType []string
	// baseURL is base parsed, when it is an absolute URL to which a plain
	// path can be appended without parsing again (see newRequest).
	baseURL *url.URL
}

// NewClient returns a Client for the server at baseURL ("http://host:8080",
// or any prefix the call paths are appended to).
func NewClient(baseURL string, opts *ClientOptions) *Client {
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	c := &Client{
		base:     baseURL,
		doer:     o.Doer,
		codec:    o.Codec,
		budget:   o.Budget,
		autoKeys: o.IdempotencyKeys,
		ics:      o.Interceptors,
		maxResp:  o.MaxResponseBytes,
		clock:    clock.Or(o.Clock),
		backoff: backoff.Policy{
			Base: o.Retry.BaseDelay, Max: o.Retry.MaxDelay, Rand: o.Retry.Rand,
		},
		maxAttempts: o.Retry.MaxAttempts,
		maxRA:       o.Retry.MaxRetryAfter,
	}
	if c.doer == nil {
		c.doer = http.DefaultClient
	}
	if c.codec == nil {
		c.codec = JSON{}
	}
	if c.budget == nil {
		c.budget = NewBudget(&BudgetOptions{Clock: c.clock})
	}
	if c.maxResp <= 0 {
		c.maxResp = DefaultMaxResponseBytes
	}
	if c.backoff.Base <= 0 {
		c.backoff.Base = DefaultBaseDelay
	}
	if c.backoff.Max <= 0 {
		c.backoff.Max = DefaultMaxDelay
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.maxRA <= 0 {
		c.maxRA = DefaultMaxRetryAfter
	}
	c.accept = []string{c.codec.ContentType()}
	c.contentType = c.accept
	if u, err := url.Parse(baseURL); err == nil && u.Scheme != "" && u.Host != "" && u.Opaque == "" &&
		u.RawPath == "" && u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" && u.RawFragment == "" {
		u.Host = removeEmptyPort(u.Host)
		c.baseURL = u
	}
	return c
}

// outgoing is what one attempt's request is made of besides the request,
// in one allocation.
type outgoing struct {
	url  url.URL
	body bytes.Reader
}

// newRequest returns the request of one attempt: the request that
// http.NewRequestWithContext makes for c.base+path and a bytes.Reader of
// body, with hdr as its header. When the base URL was parsed once and the
// path is plain (see plainPath), the URL is put together without parsing
// and the request takes four allocations instead of seven.
func (c *Client) newRequest(ctx context.Context, method, path string, hdr http.Header, body []byte) (*http.Request, error) {
	if !c.plain(method, path) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		r, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
		if err != nil {
			return nil, err
		}
		r.Header = hdr
		return r, nil
	}
	o := &outgoing{url: *c.baseURL}
	o.url.Path += path
	// r stays on the stack: WithContext makes the copy that is sent.
	r := http.Request{
		Method: method, URL: &o.url, Host: o.url.Host, Header: hdr,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
	// The body as NewRequestWithContext sets up a *bytes.Reader. net/http
	// writes the header and a body it knows to be in memory in one go: an
	// io.NopCloser of a *bytes.Reader is one.
	switch {
	case body == nil:
	case len(body) == 0:
		r.Body, r.GetBody = http.NoBody, noBody
	default:
		o.body.Reset(body)
		r.Body, r.ContentLength = io.NopCloser(&o.body), int64(len(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return r.WithContext(ctx), nil
}

// plain reports whether a request to path with method can be made
// without parsing: the base URL was parsed once, and neither method nor
// path has anything that NewRequestWithContext would change or refuse.
func (c *Client) plain(method, path string) bool {
	return c.baseURL != nil && plainMethod(method) && plainPath(path)
}

func noBody() (io.ReadCloser, error) { return http.NoBody, nil }

// plainMethod reports whether method is one that NewRequestWithContext
// takes as it is.
func plainMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// plainPath reports whether path starts with a slash and holds only bytes
// that url.Parse keeps as they are, with no escaped form (RawPath) to
// remember: letters, digits and -._~$&+,/:;=@.
func plainPath(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	for i := 0; i < len(path); i++ {
		switch b := path[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("-._~$&+,/:;=@", b) >= 0:
		default:
			return false
		}
	}
	return true
}

// removeEmptyPort strips the empty port of "host:", as net/http does.
func removeEmptyPort(host string) string {
	if strings.LastIndex(host, ":") > strings.LastIndex(host, "]") {
		return strings.TrimSuffix(host, ":")
	}
	return host
}

// CallOption adjusts one call's outgoing request.
type CallOption func(h http.Header)

// IdempotencyKey sends key as the call's Idempotency-Key: the server runs
// the operation once per key, and the client may retry the call whatever
// its method. Use a key that names the operation (an order id, a
// client-made id), not one per attempt.
func IdempotencyKey(key string) CallOption {
	return func(h http.Header) { h.Set(IdempotencyKeyHeader, key) }
}

// WithHeader sets a request header for one call.
func WithHeader(key, value string) CallOption {
	return func(h http.Header) { h.Set(key, value) }
}

// NewIdempotencyKey returns a fresh, unique key (a time-sortable id).
func NewIdempotencyKey() string { return ids.New() }

// Call sends req to path with method and decodes the answer into a Resp.
// GET and HEAD send no body; other methods send req encoded by the
// client's codec. A failure is an *Error: the server's problem details
// with their code (errors.As, or errors.Is(err, request.NotFound)),
// Unavailable when no answer came, DeadlineExceeded or Canceled (wrapping
// the context's error) when ctx ended.
//
// ctx's deadline travels to the server in the TimeoutHeader. The call is
// retried as the client's RetryPolicy says. With an error, Resp is the
// zero value, whatever an attempt may have decoded.
func Call[Resp, Req any](ctx context.Context, c *Client, method, path string, req Req, opts ...CallOption) (Resp, error) {
	var resp Resp
	var body []byte
	if method != http.MethodGet && method != http.MethodHead {
		var err error
		body, err = c.codec.Marshal(req)
		if err != nil {
			return resp, &Error{Code: InvalidArgument, Message: "encoding the request: " + err.Error(), Err: err}
		}
	}
	hdr := make(http.Header, 4)
	hdr["Accept"] = c.accept
	if body != nil {
		hdr["Content-Type"] = c.contentType
	}
	if c.autoKeys && (method == http.MethodPost || method == http.MethodPatch) {
		hdr[IdempotencyKeyHeader] = []string{ids.New()}
	}
	for _, o := range opts {
		o(hdr)
	}
	if len(c.ics) == 0 {
		if err := c.attempts(ctx, method, path, hdr, body, &resp); err != nil {
			var zero Resp
			return zero, err
		}
		return resp, nil
	}
	info := &CallInfo{Side: ClientSide, Method: method, Path: path, Header: hdr, Request: req}
	err := chain(c.ics, info, func(ctx context.Context) error {
		err := c.attempts(ctx, method, path, info.Header, body, &resp)
		if err == nil {
			info.Response = resp
		}
		return err
	})(ctx)
	if err != nil {
		var zero Resp
		return zero, err
	}
	return resp, nil
}

// attempts runs the retry loop of one call.
func (c *Client) attempts(ctx context.Context, method, path string, hdr http.Header, body []byte, out any) error {
	c.budget.deposit()
	safe := idempotent(method) || hdr.Get(IdempotencyKeyHeader) != ""
	for attempt := 1; ; attempt++ {
		// The last attempt of a call whose header no interceptor holds
		// may give the header away: nobody reads it afterwards.
		last := (!safe || attempt >= c.maxAttempts) && len(c.ics) == 0
		err := c.once(ctx, method, path, hdr, last, body, out)
		if err == nil || !safe || !retryable(err) || attempt >= c.maxAttempts || ctx.Err() != nil {
			return err
		}
		delay := c.backoff.Delay(attempt - 1)
		var e *Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			if e.RetryAfter > c.maxRA {
				return err
			}
			delay = max(delay, e.RetryAfter)
		}
		if dl, ok := ctx.Deadline(); ok && delay >= time.Until(dl) {
			return err // the retry could not finish in time
		}
		if !c.budget.withdraw() {
			return fmt.Errorf("%w (%w)", err, ErrBudgetExhausted)
		}
		if werr := c.wait(ctx, delay); werr != nil {
			return err
		}
	}
}

func (c *Client) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// errNoAnswer marks a failure before any response arrived.
var errNoAnswer = errors.New("no answer")

func retryable(err error) bool {
	if errors.Is(err, ErrCircuitOpen) {
		return false
	}
	if errors.Is(err, errNoAnswer) {
		return true
	}
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == Unavailable || e.Code == TooManyRequests || e.RetryAfter > 0
}

// ctxError is the *Error for a context that ended.
func ctxError(ctx context.Context) *Error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: DeadlineExceeded, Message: "the caller's deadline passed", Err: err}
	}
	return &Error{Code: Canceled, Message: "the caller canceled", Err: err}
}

// once makes one attempt. With last, hdr is the attempt's to give away
// (InMemory's handler gets it instead of a copy).
func (c *Client) once(ctx context.Context, method, path string, hdr http.Header, last bool, body []byte, out any) error {
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		if ms <= 0 {
			return &Error{Code: DeadlineExceeded, Message: "the caller's deadline passed", Err: context.DeadlineExceeded}
		}
		hdr[TimeoutHeader] = []string{strconv.FormatInt(ms, 10)}
	}
	var resp *http.Response
	var err error
	if t, ok := c.doer.(InMemory); ok && t.Handler != nil && c.plain(method, path) {
		resp, err = t.call(ctx, method, c.baseURL, path, hdr, last, body)
	} else {
		r, rerr := c.newRequest(ctx, method, path, hdr, body)
		if rerr != nil {
			return &Error{Code: InvalidArgument, Message: rerr.Error(), Err: rerr}
		}
		resp, err = c.doer.Do(r)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx)
		}
		var e *Error
		if errors.As(err, &e) { // from a Doer of this package (Breaker)
			return err
		}
		return &Error{Code: Unavailable, Message: err.Error(), Err: fmt.Errorf("%w: %w", errNoAnswer, err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer closeBody(resp.Body)
		return c.readError(resp)
	}
	if resp.StatusCode == http.StatusNoContent || method == http.MethodHead {
		closeBody(resp.Body)
		return nil
	}
	defer resp.Body.Close() // read to its end below, or abandoned over the limit
	ct := resp.Header.Get("Content-Type")
	if mb, ok := resp.Body.(*memBody); ok {
		// InMemory's body: decode it where it lies.
		return mb.readAll(func(data []byte) error { return c.decode(ct, data, int64(len(data)), out) })
	}
	buf := getBuffer()
	defer putBuffer(buf)
	n, err := readLimited(buf, resp.Body, c.maxResp)
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx)
		}
		return &Error{Code: Unavailable, Message: "reading the response: " + err.Error(), Err: fmt.Errorf("%w: %w", errNoAnswer, err)}
	}
	return c.decode(ct, buf.Bytes(), n, out)
}

// decode checks a successful response's body, n bytes long as read (one
// more than the limit when it is over), and decodes it into out.
func (c *Client) decode(contentType string, data []byte, n int64, out any) error {
	if n > c.maxResp {
		return &Error{Code: Internal, Message: fmt.Sprintf("response larger than %d bytes", c.maxResp)}
	}
	if n > 0 && mediaType(contentType) != c.codec.ContentType() {
		return &Error{Code: Internal, Message: fmt.Sprintf("response Content-Type %q, want %s", contentType, c.codec.ContentType())}
	}
	if n == 0 {
		return nil
	}
	if err := c.codec.Unmarshal(data, out); err != nil {
		return &Error{Code: Internal, Message: "decoding the response: " + err.Error(), Err: err}
	}
	return nil
}

// closeBody drains a little of what is left, so the connection can be
// reused, and closes the body.
func closeBody(b io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(b, 4<<10))
	_ = b.Close()
}

// readError turns a failed response into an *Error: from its problem
// details when it has them, from its status otherwise.
func (c *Client) readError(resp *http.Response) *Error {
	e := &Error{status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.clock.Now())}
	d, ok := problem.Read(resp)
	if !ok {
		e.Code = CodeForStatus(resp.StatusCode)
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		e.Message = string(bytes.TrimSpace(msg))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	e.Code = CodeForStatus(resp.StatusCode)
	if s, _ := d.Extensions["code"].(string); Code(s).Valid() {
		e.Code = Code(s)
	}
	e.Message, e.Type, e.Title, e.Instance = d.Detail, d.Type, d.Title, d.Instance
	if e.Code == Internal {
		e.Public = true // it was public enough to be sent
	}
	if list, ok := d.Extensions["errors"].([]any); ok {
		for _, item := range list {
			m, _ := item.(map[string]any)
			field, _ := m["field"].(string)
			detail, _ := m["detail"].(string)
			if field != "" || detail != "" {
				e.Fields = append(e.Fields, FieldError{Field: field, Detail: detail})
			}
		}
	}
	return e
}

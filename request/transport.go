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
	"sync"
	"time"
)

// InMemory is a Doer and an http.RoundTripper that serves each request by
// calling Handler directly, in the caller's goroutine, with no network and
// no serialisation beyond the bodies. It is the transport of tests and of
// services that call a handler in the same process, and it behaves as
// HTTP does where it matters: the handler sees a request of its own (its
// own header, RequestURI, RemoteAddr "in-memory"), whose context ends when
// the caller's does but carries neither the caller's values nor its
// deadline (which travels in the TimeoutHeader, as over the network). A
// handler that panics fails the call, as a connection dropped by net/http
// would. The zero value has no handler: set Handler.
//
// The response is delivered whole once the handler returns (Flush does
// nothing; trailers are not carried). Its body is held in a pooled buffer
// that Close gives back: close it, as with any http.Response, or the
// buffer is left to the garbage collector; a Read after Close fails. A
// handler that writes to its ResponseWriter after it returned gets an
// error and changes nothing.
//
// A [Client] whose Doer is an InMemory makes the handler's request
// directly, the one Do would make of the Client's, and decodes the
// response body where it lies: no request is built only to be copied.
type InMemory struct {
	Handler http.Handler
}

var (
	_ Doer              = InMemory{}
	_ http.RoundTripper = InMemory{}
)

// RoundTrip is Do, for use as an http.Client's Transport.
func (t InMemory) RoundTrip(r *http.Request) (*http.Response, error) { return t.Do(r) }

// memExchange is everything one in-memory exchange needs besides the
// server's copy of the request and the two headers: one allocation.
type memExchange struct {
	ctx  detached
	w    memWriter
	resp http.Response
	body memBody
}

// memCall is a memExchange for call, which makes the server's request
// itself.
type memCall struct {
	memExchange
	url url.URL
	in  reqBody
}

// Do serves r with the handler and returns its response, whose body is
// already complete.
func (t InMemory) Do(r *http.Request) (*http.Response, error) {
	if t.Handler == nil {
		return nil, errors.New("request: InMemory has no Handler")
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	x := &memExchange{ctx: detached{r.Context()}}
	sr := r.WithContext(&x.ctx)
	sr.Header = r.Header.Clone()
	if sr.Header == nil {
		sr.Header = http.Header{}
	}
	sr.RequestURI = r.URL.RequestURI()
	sr.RemoteAddr = "in-memory"
	sr.Proto, sr.ProtoMajor, sr.ProtoMinor = "HTTP/1.1", 1, 1
	if sr.Host == "" {
		sr.Host = r.URL.Host
	}
	if sr.Body == nil {
		sr.Body = http.NoBody
	}
	resp, err := t.serve(r.Context(), x, sr)
	if err != nil {
		return nil, err
	}
	resp.Request = r
	return resp, nil
}

// call is what a Client does through Do, without the request it would
// make only for Do to copy it: it makes the server's request from the
// parts, as Do would see it — base with path appended (a URL that
// NewRequestWithContext would parse to the same), a copy of hdr, body —
// and serves it. With own, hdr is the caller's to give away and the
// handler gets it instead of a copy. The response's Request is nil.
func (t InMemory) call(ctx context.Context, method string, base *url.URL, path string, hdr http.Header, own bool, body []byte) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x := &memCall{memExchange: memExchange{ctx: detached{ctx}}, url: *base}
	x.url.Path += path
	// r stays on the stack: WithContext makes the copy that is served.
	r := http.Request{
		Method: method, URL: &x.url, Host: x.url.Host, RequestURI: x.url.RequestURI(),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, Body: http.NoBody, RemoteAddr: "in-memory",
	}
	if !own || hdr == nil {
		r.Header = hdr.Clone()
		if r.Header == nil {
			r.Header = http.Header{}
		}
	}
	if len(body) > 0 {
		x.in.Reset(body)
		r.Body, r.ContentLength = &x.in, int64(len(body))
	}
	return t.serve(ctx, &x.memExchange, r.WithContext(&x.ctx))
}

// serve runs the handler on sr, the server's request of a caller whose
// context is ctx, and returns x's response.
func (t InMemory) serve(ctx context.Context, x *memExchange, sr *http.Request) (resp *http.Response, err error) {
	w := &x.w
	w.header = make(http.Header)
	w.body = getBuffer()
	defer func() {
		buf := w.finish()
		if p := recover(); p != nil {
			putBuffer(buf)
			resp = nil
			if p == http.ErrAbortHandler {
				err = errors.New("request: in-memory handler aborted the response")
				return
			}
			err = fmt.Errorf("request: in-memory handler panicked: %v", p)
			return
		}
		if err != nil {
			putBuffer(buf)
			return
		}
		x.body.data, x.body.buf = buf.Bytes(), buf
	}()
	t.Handler.ServeHTTP(w, sr)
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x.resp = http.Response{
		Status:        statusLine(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          &x.body,
		ContentLength: int64(w.body.Len()),
	}
	return &x.resp, nil
}

// reqBody is the body of a request that call makes: a bytes.Reader that
// closes.
type reqBody struct{ bytes.Reader }

func (*reqBody) Close() error { return nil }

func statusLine(status int) string {
	switch status {
	case http.StatusOK:
		return "200 OK"
	case http.StatusCreated:
		return "201 Created"
	}
	return strconv.Itoa(status) + " " + http.StatusText(status)
}

// detached ends when its parent does, but shows neither the parent's
// values nor its deadline, and reports Canceled, as a server sees a
// client that went away.
type detached struct{ parent context.Context }

func (*detached) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d *detached) Done() <-chan struct{}     { return d.parent.Done() }
func (*detached) Value(any) any               { return nil }
func (d *detached) Err() error {
	if d.parent.Err() != nil {
		return context.Canceled
	}
	return nil
}

// AfterFunc lets a context derived from d (a handler's deadline) follow
// the parent without a goroutine of its own: package context looks for
// this method.
func (d *detached) AfterFunc(f func()) (stop func() bool) { return context.AfterFunc(d.parent, f) }

func (*detached) String() string { return "request.InMemory's server context" }

// errWriteAfterReturn is what a handler gets for writing after it returned.
var errWriteAfterReturn = errors.New("request: write to an in-memory response after its handler returned")

// memWriter records a response into a pooled buffer.
type memWriter struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        *bytes.Buffer // nil once the handler returned
}

func (w *memWriter) Header() http.Header { return w.header }

func (w *memWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader, w.status = true, status
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.body == nil {
		return 0, errWriteAfterReturn
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.body.Write(p)
}

// Flush does nothing: the response is delivered whole.
func (w *memWriter) Flush() {}

// finish takes the body from the writer, so that later writes fail
// instead of touching a buffer that belongs to the response (and, once
// that is closed, to the pool).
func (w *memWriter) finish() *bytes.Buffer {
	b := w.body
	w.body = nil
	return b
}

// memBody is a response body already in memory, in a pooled buffer that
// Close returns. Read and Close may be called concurrently.
type memBody struct {
	mu     sync.Mutex
	data   []byte        // what is left to read
	buf    *bytes.Buffer // the pooled buffer data points into; nil once closed
	closed bool
}

// errReadAfterClose is net/http's answer to the same mistake.
var errReadAfterClose = errors.New("http: read on closed response body")

func (b *memBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errReadAfterClose
	}
	if len(b.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *memBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		putBuffer(b.buf)
		b.data, b.buf = nil, nil
	}
	return nil
}

// readAll hands what is left to f without a copy, then closes the body:
// the bytes are valid only during f.
func (b *memBody) readAll(f func(data []byte) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errReadAfterClose
	}
	data := b.data
	b.data = nil
	return f(data)
}

// Buffers are pooled for bodies and encodings; one that grew beyond
// maxPooledBytes is left to the garbage collector instead, so that the
// pool never pins more than a few such buffers' worth of memory.
const maxPooledBytes = 4 << 20

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBuffer(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBytes {
		b.Reset()
		bufPool.Put(b)
	}
}

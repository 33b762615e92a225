package request

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"

	"golang.org/x/sync/singleflight"
)

// DefaultCoalesceMaxBytes bounds the response a coalesced call shares.
const DefaultCoalesceMaxBytes = 4 << 20

// CoalesceOptions configures Coalesce. A nil *CoalesceOptions, and every
// zero field, means the default.
type CoalesceOptions struct {
	// Key says which requests are the same read: requests that get the
	// same key while one of them runs share its response; ok false leaves
	// a request alone. Default DefaultCoalesceKey.
	Key func(r *http.Request) (key string, ok bool)
	// MaxBodyBytes bounds the response kept to share. When the response
	// is larger, the requests that waited for it run on their own, as if
	// nothing had been coalesced. Default DefaultCoalesceMaxBytes (4 MiB).
	MaxBodyBytes int64
}

// DefaultCoalesceKey coalesces GET and HEAD requests with the same URL,
// Accept and Authorization headers, so that callers with different
// credentials never share a response.
func DefaultCoalesceKey(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", false
	}
	return r.Method + " " + r.Host + r.URL.RequestURI() + "\x00" + r.Header.Get("Accept") + "\x00" + r.Header.Get("Authorization"), true
}

// Coalesce returns server middleware that merges identical concurrent
// reads into one execution (golang.org/x/sync/singleflight): the first
// request with a key runs the handler; those that arrive with the same key
// before it ends wait and get a copy of its status, header and body. A
// request arriving after it ended runs again: this is not a cache.
//
// The shared execution sees the first request, with its context values
// and deadline but not its cancellation, so no caller going away fails
// the others; a caller that goes away stops waiting at once. A handler
// that panics fails every waiting request with 500 (the panic is logged
// by the handler's own recovery when it is a [NewHandler]). A response
// larger than MaxBodyBytes is not shared: each waiting request then runs
// the handler itself.
func Coalesce(opts *CoalesceOptions) func(http.Handler) http.Handler {
	var o CoalesceOptions
	if opts != nil {
		o = *opts
	}
	if o.Key == nil {
		o.Key = DefaultCoalesceKey
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultCoalesceMaxBytes
	}
	return func(next http.Handler) http.Handler {
		return &coalescer{next: next, o: o}
	}
}

var discardLogger = slog.New(slog.DiscardHandler)

// coalesceJoined, when set (by tests), is called once a request has
// joined the flight for key.
var coalesceJoined func(key string)

type coalescer struct {
	next  http.Handler
	o     CoalesceOptions
	group singleflight.Group
}

type shared struct {
	status   int
	header   http.Header
	body     []byte
	overflow bool
	panicked bool
}

func (c *coalescer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := c.o.Key(r)
	if !ok {
		c.next.ServeHTTP(w, r)
		return
	}
	ch := c.group.DoChan(key, func() (any, error) { return c.run(r), nil })
	if coalesceJoined != nil {
		coalesceJoined(key)
	}
	var res *shared
	select {
	case v := <-ch:
		res = v.Val.(*shared)
	case <-r.Context().Done():
		return // the caller went away; the execution goes on for the others
	}
	switch {
	case res.panicked:
		writeProblem(w, r, discardLogger, r.Context(), &Error{Code: Internal, Message: "the shared call failed"})
	case res.overflow:
		c.next.ServeHTTP(w, r)
	default:
		hdr := w.Header()
		for k, v := range res.header {
			hdr[k] = append([]string(nil), v...)
		}
		w.WriteHeader(res.status)
		_, _ = w.Write(res.body)
	}
}

// run executes the handler once for every request of a flight, into a
// buffer.
func (c *coalescer) run(r *http.Request) (res *shared) {
	res = &shared{}
	ctx := context.WithoutCancel(r.Context())
	if dl, ok := r.Context().Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	bw := &bufferWriter{header: http.Header{}, max: c.o.MaxBodyBytes}
	defer func() {
		if p := recover(); p != nil {
			res.panicked = true
		}
	}()
	c.next.ServeHTTP(bw, r.WithContext(ctx))
	if bw.status == 0 {
		bw.status = http.StatusOK
	}
	res.status, res.header, res.body, res.overflow = bw.status, bw.header, bw.body.Bytes(), bw.overflow
	return res
}

// bufferWriter is a ResponseWriter that keeps the response, up to max
// body bytes.
type bufferWriter struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	max      int64
	overflow bool
}

func (b *bufferWriter) Header() http.Header { return b.header }

func (b *bufferWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferWriter) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	if b.overflow || int64(b.body.Len()+len(p)) > b.max {
		b.overflow = true
		b.body = bytes.Buffer{}
		return len(p), nil
	}
	return b.body.Write(p)
}

package request

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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
type InMemory struct {
	Handler http.Handler
}

var (
	_ Doer              = InMemory{}
	_ http.RoundTripper = InMemory{}
)

// RoundTrip is Do, for use as an http.Client's Transport.
func (t InMemory) RoundTrip(r *http.Request) (*http.Response, error) { return t.Do(r) }

// Do serves r with the handler and returns its response, whose body is
// already complete.
func (t InMemory) Do(r *http.Request) (resp *http.Response, err error) {
	if t.Handler == nil {
		return nil, errors.New("request: InMemory has no Handler")
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	sr := r.WithContext(detached{r.Context()})
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
	w := &memWriter{header: http.Header{}}
	defer func() {
		if p := recover(); p != nil {
			resp = nil
			if p == http.ErrAbortHandler {
				err = errors.New("request: in-memory handler aborted the response")
				return
			}
			err = fmt.Errorf("request: in-memory handler panicked: %v", p)
		}
	}()
	t.Handler.ServeHTTP(w, sr)
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if r.Context().Err() != nil {
		return nil, r.Context().Err()
	}
	return &http.Response{
		Status:        statusLine(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          &memBody{Reader: *bytes.NewReader(w.body.Bytes())},
		ContentLength: int64(w.body.Len()),
		Request:       r,
	}, nil
}

// memBody is a response body already in memory.
type memBody struct{ bytes.Reader }

func (*memBody) Close() error { return nil }

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

func (detached) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d detached) Done() <-chan struct{}     { return d.parent.Done() }
func (detached) Value(any) any               { return nil }
func (d detached) Err() error {
	if d.parent.Err() != nil {
		return context.Canceled
	}
	return nil
}

// memWriter records a response.
type memWriter struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (w *memWriter) Header() http.Header { return w.header }

func (w *memWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader, w.status = true, status
}

func (w *memWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.body.Write(p)
}

// Flush does nothing: the response is delivered whole.
func (w *memWriter) Flush() {}

package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/problem"
)

// Defaults of the Client.
const (
	DefaultClientRetry = 3 * time.Second
	DefaultMaxRetry    = time.Minute
)

// ErrContentType is returned by Client.Run when the server answers 200 with
// a Content-Type other than text/event-stream: as the standard says, the
// client fails rather than reconnects.
var ErrContentType = errors.New("sse: response is not text/event-stream")

// StatusError is returned by Client.Run when the server answers with a
// status other than 200 (or 204, which ends Run cleanly). The client does
// not reconnect.
type StatusError struct {
	Code int
	// Problem holds the RFC 9457 problem details the server sent, if any.
	Problem problem.Details
}

func (e *StatusError) Error() string {
	if e.Problem.Detail != "" {
		return fmt.Sprintf("sse: server answered %d: %s", e.Code, e.Problem.Detail)
	}
	return fmt.Sprintf("sse: server answered %d %s", e.Code, http.StatusText(e.Code))
}

// Client reads an event stream and reconnects when it breaks, sending the
// last event id it received as Last-Event-ID so the server resumes where it
// left off: a Go EventSource. Set URL and call Run; the other fields are
// optional. A Client is for one Run at a time.
type Client struct {
	// URL of the stream. Required.
	URL string
	// HTTPClient makes the requests. Nil means http.DefaultClient. Its
	// Timeout must be zero (a timeout would cut a healthy stream).
	HTTPClient *http.Client
	// Header is added to every request (authorization, say).
	Header http.Header
	// LastEventID is sent as Last-Event-ID on the first request; Run keeps
	// it up to date, so a later Run resumes too.
	LastEventID string
	// Retry is the delay before reconnecting after a stream ends; the
	// server's "retry:" field replaces it. Default DefaultClientRetry (3s).
	// After failed attempts in a row the delay grows exponentially, with
	// jitter, up to MaxRetry.
	Retry time.Duration
	// MaxRetry caps the reconnection delay. Default DefaultMaxRetry.
	MaxRetry time.Duration
	// MaxEventSize bounds one line and one event's data. Default
	// DefaultMaxEventSize.
	MaxEventSize int

	clock clock.Clock
}

// Run connects and calls handle with each event, in order, reconnecting
// when the stream breaks, until ctx ends (it returns ctx.Err()), the server
// answers 204 No Content (it returns nil), the server answers another
// non-200 status (*StatusError) or a wrong Content-Type (ErrContentType),
// or handle returns an error (which Run returns).
func (c *Client) Run(ctx context.Context, handle func(Event) error) error {
	if c.URL == "" {
		return errors.New("sse: Client.URL is empty")
	}
	clk := clock.Or(c.clock)
	retry := c.Retry
	if retry <= 0 {
		retry = DefaultClientRetry
	}
	failures := 0
	for {
		got, err := c.connect(ctx, handle, &retry)
		var fatal *fatalError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errNoContent):
			return nil
		case errors.As(err, &fatal):
			return fatal.err
		}
		if got {
			failures = 0
		} else {
			failures++
		}
		t := clk.NewTimer(c.delay(retry, failures))
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// delay is the wait before the next attempt: the retry delay after a
// stream that worked, growing with full jitter above it after failures.
func (c *Client) delay(retry time.Duration, failures int) time.Duration {
	if failures <= 1 {
		return retry
	}
	limit := c.MaxRetry
	if limit <= 0 {
		limit = DefaultMaxRetry
	}
	ceiling := retry
	for i := 1; i < failures && ceiling < limit; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, limit)
	if ceiling <= retry {
		return retry
	}
	return retry + time.Duration(rand.Int64N(int64(ceiling-retry)+1))
}

var errNoContent = errors.New("sse: 204 No Content")

// fatalError ends Run: reconnecting would not help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// connect makes one request and reads its stream. It reports whether the
// stream delivered anything.
func (c *Client) connect(ctx context.Context, handle func(Event) error, retry *time.Duration) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return false, &fatalError{err}
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if c.LastEventID != "" {
		req.Header.Set("Last-Event-ID", c.LastEventID)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return false, errNoContent
	default:
		e := &StatusError{Code: resp.StatusCode}
		if d, ok := problem.Read(resp); ok {
			e.Problem = d
		}
		return false, &fatalError{e}
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/event-stream" {
		return false, &fatalError{fmt.Errorf("%w: %q", ErrContentType, resp.Header.Get("Content-Type"))}
	}
	d := NewDecoder(resp.Body)
	if c.MaxEventSize > 0 {
		d.Buffer(c.MaxEventSize)
	}
	d.lastID = c.LastEventID
	got := false
	for {
		e, err := d.Next()
		if r, ok := d.Retry(); ok {
			*retry = r
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			return got, err
		}
		got = true
		c.LastEventID = e.ID
		if err := handle(e); err != nil {
			return got, &fatalError{err}
		}
	}
}

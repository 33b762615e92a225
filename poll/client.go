package poll

import (
	"context"
	"encoding/json"
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
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/pubsub"
)

// Defaults of the clients.
const (
	// DefaultMaxDelay caps the clients' backoff between attempts.
	DefaultMaxDelay = 30 * time.Second
	// DefaultMaxResponseSize bounds a response body the clients read.
	DefaultMaxResponseSize = 16 << 20
)

// StatusError is an HTTP answer a client did not expect, with the problem
// details the server sent, if any. errors.Is(err, ErrNotFound) reports
// true for a 404.
type StatusError struct {
	Code    int
	Problem problem.Details

	retryAfter time.Duration // from the Retry-After header; -1 when none
}

func (e *StatusError) Error() string {
	if e.Problem.Detail != "" {
		return fmt.Sprintf("poll: server answered %d: %s", e.Code, e.Problem.Detail)
	}
	return fmt.Sprintf("poll: server answered %d %s", e.Code, http.StatusText(e.Code))
}

// Is makes a 404 match ErrNotFound.
func (e *StatusError) Is(target error) bool {
	return target == ErrNotFound && e.Code == http.StatusNotFound
}

// JobError is a job that finished without a result: Failed or Canceled.
// errors.Is(err, ErrJobFailed) or ErrJobCanceled tells which.
type JobError struct{ Job Job }

// Errors a JobError matches.
var (
	ErrJobFailed   = errors.New("poll: job failed")
	ErrJobCanceled = errors.New("poll: job canceled")
)

func (e *JobError) Error() string {
	return fmt.Sprintf("poll: job %s %s: %s", e.Job.ID, e.Job.Status, e.Job.Error)
}

// Is matches ErrJobFailed or ErrJobCanceled.
func (e *JobError) Is(target error) bool {
	return (target == ErrJobFailed && e.Job.Status == Failed) || (target == ErrJobCanceled && e.Job.Status == Canceled)
}

// retryable reports whether another attempt may succeed: transport errors
// and 5xx, 429 and 408 answers.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
	}
	return true
}

// JobClient is the client side of short polling: Submit starts a job with
// a POST, Await polls its status until it finishes, Do is both. It honours
// Retry-After, backs off with full jitter when there is none (and after
// errors), and long-polls instead when Wait is set. Its zero value is ready;
// it is safe for concurrent use.
type JobClient struct {
	// HTTPClient makes the requests. Nil means http.DefaultClient. Redirects
	// are not followed (the client reads the 303 itself).
	HTTPClient *http.Client
	// Header is added to every request.
	Header http.Header
	// Wait, when positive, long-polls the status with ?wait= instead of
	// sleeping between polls.
	Wait time.Duration
	// MaxDelay caps the wait between polls and retries. Default
	// DefaultMaxDelay (30s).
	MaxDelay time.Duration

	clock clock.Clock
}

// Do submits a job and waits for its outcome: see Submit and Await.
func (c *JobClient) Do(ctx context.Context, url, contentType string, body io.Reader) (Job, error) {
	_, loc, err := c.Submit(ctx, url, contentType, body)
	if err != nil {
		return Job{}, err
	}
	return c.Await(ctx, loc)
}

// Submit POSTs body to url and returns the accepted job and the absolute
// URL of its status (the Location header). It does not retry: a POST is
// not idempotent. Any answer other than 202 is a *StatusError.
func (c *JobClient) Submit(ctx context.Context, url, contentType string, body io.Reader) (Job, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return Job{}, "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.do(req)
	if err != nil {
		return Job{}, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return Job{}, "", statusError(resp)
	}
	loc, err := resp.Location()
	if err != nil {
		return Job{}, "", fmt.Errorf("poll: 202 without a usable Location: %w", err)
	}
	var job Job
	if err := decode(resp, &job); err != nil {
		return Job{}, "", err
	}
	return job, loc.String(), nil
}

// Await polls the status URL until the job finishes and returns it, with
// its Result when it succeeded. A failed or canceled job is a *JobError;
// an unknown or expired one a *StatusError matching ErrNotFound; ctx
// ending returns ctx.Err().
func (c *JobClient) Await(ctx context.Context, statusURL string) (Job, error) {
	clk := clock.Or(c.clock)
	policy := backoff.Policy{Base: 250 * time.Millisecond, Max: c.maxDelay()}
	polls, failures := 0, 0
	for {
		job, delay, err := c.check(ctx, statusURL)
		switch {
		case err == nil && job.Status.Done():
			if job.Status != Succeeded {
				return job, &JobError{Job: job}
			}
			return job, nil
		case err == nil:
			failures = 0
			if delay < 0 { // no Retry-After
				delay = policy.Delay(polls)
				polls++
			}
		case ctx.Err() != nil:
			return Job{}, ctx.Err()
		case !retryable(err):
			return Job{}, err
		default:
			if delay < 0 {
				delay = policy.Delay(failures)
			}
			failures++
		}
		if err := sleep(ctx, clk, min(delay, c.maxDelay())); err != nil {
			return Job{}, err
		}
	}
}

func (c *JobClient) maxDelay() time.Duration {
	if c.MaxDelay > 0 {
		return c.MaxDelay
	}
	return DefaultMaxDelay
}

// check asks once. delay is the Retry-After the server sent, 0 after a
// long poll that sent none, -1 when the client should choose.
func (c *JobClient) check(ctx context.Context, statusURL string) (Job, time.Duration, error) {
	u := statusURL
	if c.Wait > 0 {
		u = withQuery(u, url.Values{"wait": {c.Wait.String()}})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Job{}, 0, err
	}
	resp, err := c.do(req)
	if err != nil {
		return Job{}, -1, err
	}
	defer resp.Body.Close()
	delay := retryAfter(resp)
	if delay < 0 && c.Wait > 0 && resp.StatusCode == http.StatusOK {
		delay = 0
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var job Job
		return job, delay, decode(resp, &job)
	case http.StatusSeeOther:
		var job Job
		if err := decode(resp, &job); err != nil {
			return Job{}, -1, err
		}
		loc, err := resp.Location()
		if err != nil {
			return Job{}, -1, fmt.Errorf("poll: 303 without a usable Location: %w", err)
		}
		job.Result, err = c.fetch(ctx, loc.String())
		return job, -1, err
	default:
		return Job{}, delay, statusError(resp)
	}
}

func (c *JobClient) fetch(ctx context.Context, u string) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var raw json.RawMessage
	return raw, decode(resp, &raw)
}

func (c *JobClient) do(req *http.Request) (*http.Response, error) {
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	hc := http.DefaultClient
	if c.HTTPClient != nil {
		hc = c.HTTPClient
	}
	noFollow := *hc
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return noFollow.Do(req)
}

// LongPollClient follows a LongPoll endpoint: it keeps the cursor, asks
// again as soon as an answer arrives, and reconnects with backoff and
// jitter after errors, so that the handler sees every message once and in
// order. Set URL and call Run (or Poll for one request). A LongPollClient
// is for one Run at a time.
type LongPollClient struct {
	// URL of the endpoint, such as "http://host/updates/orders.%3E".
	// Required. Its own query parameters are kept.
	URL string
	// HTTPClient makes the requests. Nil means http.DefaultClient. Its
	// Timeout, if any, must exceed Wait.
	HTTPClient *http.Client
	// Header is added to every request.
	Header http.Header
	// Cursor is where to continue: empty starts from now (or from the
	// oldest retained message, with FromOldest). Poll and Run keep it up
	// to date, so a later Run resumes.
	Cursor pubsub.Cursor
	// FromOldest starts a client without a Cursor at the oldest message
	// the server retains.
	FromOldest bool
	// Wait is the wait to ask for. Zero means the server's default.
	Wait time.Duration
	// Max is the most messages to ask for per response. Zero means the
	// server's default.
	Max int
	// MaxDelay caps the backoff between failed attempts. Default
	// DefaultMaxDelay (30s).
	MaxDelay time.Duration

	clock clock.Clock
}

// GapError is a 410 Gone from a LongPoll endpoint: history no longer
// reaches the client's cursor. errors.Is(err, pubsub.ErrGap) reports true.
// To resync, accept the loss and continue from Oldest: set Cursor to ""
// and FromOldest to true (or start from now) and Run again.
type GapError struct {
	Cursor pubsub.Cursor // the cursor the client sent
	Reason string        // as pubsub.GapError's
	Oldest pubsub.Cursor // the oldest message still retained; "" if none
}

func (e *GapError) Error() string {
	return fmt.Sprintf("poll: history gap after cursor %q (%s); history now starts at %q", e.Cursor, e.Reason, e.Oldest)
}

// Is makes errors.Is(err, pubsub.ErrGap) true.
func (e *GapError) Is(target error) bool { return target == pubsub.ErrGap }

// Poll makes one request and returns its messages (none when the wait
// ended), advancing Cursor past them. Errors: *GapError for a 410,
// *StatusError for other answers, transport errors as they come.
func (c *LongPollClient) Poll(ctx context.Context) ([]Message, error) {
	if c.URL == "" {
		return nil, errors.New("poll: LongPollClient.URL is empty")
	}
	q := url.Values{}
	switch {
	case c.Cursor != "":
		q.Set("cursor", string(c.Cursor))
	case c.FromOldest:
		q.Set("from", "oldest")
	}
	if c.Wait > 0 {
		q.Set("wait", c.Wait.String())
	}
	if c.Max > 0 {
		q.Set("max", strconv.Itoa(c.Max))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, withQuery(c.URL, q), nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	hc := http.DefaultClient
	if c.HTTPClient != nil {
		hc = c.HTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp)
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusGone {
			g := &GapError{Cursor: c.Cursor}
			g.Reason, _ = se.Problem.Extensions["reason"].(string)
			oldest, _ := se.Problem.Extensions["oldest"].(string)
			g.Oldest = pubsub.Cursor(oldest)
			return nil, g
		}
		return nil, err
	}
	var body Response
	if err := decode(resp, &body); err != nil {
		return nil, err
	}
	if body.Cursor != "" {
		c.Cursor = body.Cursor
	}
	return body.Messages, nil
}

// Run polls until ctx ends (it returns ctx.Err()), handle returns an error
// (Run returns it; Cursor stays at the last message handled, so the next
// Run delivers the failed one again), history no longer reaches the
// cursor (*GapError), or the server refuses the request with a 4xx other
// than 408 and 429 (*StatusError). Transport errors and 5xx answers are
// retried with backoff and full jitter, honouring Retry-After.
func (c *LongPollClient) Run(ctx context.Context, handle func(Message) error) error {
	clk := clock.Or(c.clock)
	maxDelay := c.MaxDelay
	if maxDelay <= 0 {
		maxDelay = DefaultMaxDelay
	}
	policy := backoff.Policy{Base: 250 * time.Millisecond, Max: maxDelay}
	failures := 0
	for {
		start := c.Cursor
		msgs, err := c.Poll(ctx)
		if err != nil {
			var se *StatusError
			var gap *GapError
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.As(err, &gap):
				return err
			case !retryable(err):
				return err
			}
			delay := policy.Delay(failures)
			if errors.As(err, &se) && se.retryAfter > 0 {
				delay = se.retryAfter
			}
			failures++
			if err := sleep(ctx, clk, min(delay, maxDelay)); err != nil {
				return err
			}
			continue
		}
		failures = 0
		c.Cursor = start
		for _, m := range msgs {
			if err := handle(m); err != nil {
				return err
			}
			c.Cursor = m.Cursor
		}
	}
}

func sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// withQuery adds q to the query of u.
func withQuery(u string, q url.Values) string {
	if len(q) == 0 {
		return u
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + q.Encode()
}

// retryAfter reads Retry-After in seconds; -1 when absent or not seconds.
func retryAfter(resp *http.Response) time.Duration {
	s := resp.Header.Get("Retry-After")
	if s == "" {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return -1
	}
	return time.Duration(n) * time.Second
}

func statusError(resp *http.Response) error {
	e := &StatusError{Code: resp.StatusCode, retryAfter: retryAfter(resp)}
	if d, ok := problem.Read(resp); ok {
		e.Problem = d
	}
	return e
}

func decode(resp *http.Response, v any) error {
	err := json.NewDecoder(io.LimitReader(resp.Body, DefaultMaxResponseSize)).Decode(v)
	if err != nil {
		return fmt.Errorf("poll: reading a %d response: %w", resp.StatusCode, err)
	}
	return nil
}

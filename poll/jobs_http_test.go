package poll_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/poll"
)

type jobsFixture struct {
	jobs     *poll.Jobs
	jobClock *clock.Fake // job times, expiry
	clock    *clock.Fake // the handler's waits and Retry-After
	h        *poll.JobsHandler
	srv      *httptest.Server
	gates    chan *gate // the gate of each job started over HTTP
}

// newJobsHTTP serves jobs whose work waits on a gate; a body "fail" makes
// the work fail, "bad" is refused by the StartFunc.
func newJobsHTTP(t *testing.T, opts poll.JobsHandlerOptions) *jobsFixture {
	t.Helper()
	f := &jobsFixture{clock: clock.NewFake(epoch), gates: make(chan *gate, 10)}
	f.jobs, f.jobClock = newJobs(t, poll.JobsOptions{TTL: time.Hour})
	// Both clocks move together where a test needs it; each has its own
	// timers, so counting them stays exact.
	start := func(r *http.Request) (poll.Work, error) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		if string(body) == "bad" {
			return nil, errors.New("bad input")
		}
		g := newGate()
		f.gates <- g
		if string(body) == "fail" {
			return g.work(nil, errors.New("it broke")), nil
		}
		return g.work(map[string]string{"echo": string(body)}, nil), nil
	}
	opts.Clock = f.clock
	opts.MaxBodySize = 64
	f.h = poll.NewJobsHandler(f.jobs, start, &opts)
	mux := http.NewServeMux()
	mux.Handle("/jobs", f.h)
	mux.Handle("/jobs/", f.h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		require.NoError(t, f.h.Shutdown(context.Background()))
		f.srv.Close()
	})
	return f
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (f *jobsFixture) do(t *testing.T, ctx context.Context, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, f.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := noRedirect().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func decodeJob(t *testing.T, b []byte) poll.Job {
	t.Helper()
	var j poll.Job
	require.NoError(t, json.Unmarshal(b, &j), "body %s", b)
	return j
}

func (f *jobsFixture) submit(t *testing.T, ctx context.Context, body string) (poll.Job, *gate) {
	t.Helper()
	resp, b := f.do(t, ctx, http.MethodPost, "/jobs", body)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
	return decodeJob(t, b), <-f.gates
}

func TestJobsHandlerAcceptsWith202LocationAndRetryAfter(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	resp, b := f.do(t, ctx, http.MethodPost, "/jobs", "hi")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	job := decodeJob(t, b)
	assert.Equal(t, "/jobs/"+job.ID, resp.Header.Get("Location"))
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, poll.Pending, job.Status)
	g := <-f.gates
	close(g.release)
}

func TestJobsHandlerStatusRetryAfterGrowsWithAge(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{MaxRetryAfter: 20 * time.Second})
	job, g := f.submit(t, ctx, "hi")
	defer close(g.release)
	waitFor(t, ctx, g.started)
	tests := []struct {
		age  time.Duration
		want string
	}{
		{0, "1"}, {9 * time.Second, "1"}, {30 * time.Second, "3"}, {100 * time.Second, "10"}, {time.Hour, "20"},
	}
	for _, tt := range tests {
		f.clock.Set(epoch.Add(tt.age))
		resp, b := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID, "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, poll.Running, decodeJob(t, b).Status)
		assert.Equal(t, tt.want, resp.Header.Get("Retry-After"), "at age %v", tt.age)
	}
}

func TestJobsHandlerSeeOtherWhenDone(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	job, g := f.submit(t, ctx, "hi")
	close(g.release)
	_, err := f.jobs.Wait(ctx, job.ID)
	require.NoError(t, err)

	resp, b := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID, "")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Equal(t, "/jobs/"+job.ID+"/result", resp.Header.Get("Location"))
	assert.Equal(t, poll.Succeeded, decodeJob(t, b).Status)

	resp, b = f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID+"/result", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"echo":"hi"}`, string(b))
}

func TestJobsHandlerInlineResult(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{InlineResult: true})
	job, g := f.submit(t, ctx, "hi")
	close(g.release)
	_, err := f.jobs.Wait(ctx, job.ID)
	require.NoError(t, err)
	resp, b := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"echo":"hi"}`, string(decodeJob(t, b).Result))
}

func TestJobsHandlerCancelAndConflicts(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	job, g := f.submit(t, ctx, "hi")
	waitFor(t, ctx, g.started)

	resp, b := f.do(t, ctx, http.MethodDelete, "/jobs/"+job.ID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, poll.Canceled, decodeJob(t, b).Status)
	resp, b = f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, poll.Canceled, decodeJob(t, b).Status)
	resp, _ = f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID+"/result", "")
	assert.Equal(t, http.StatusConflict, resp.StatusCode, "a canceled job has no result")

	done, g2 := f.submit(t, ctx, "fail")
	close(g2.release)
	_, err := f.jobs.Wait(ctx, done.ID)
	require.NoError(t, err)
	resp, b = f.do(t, ctx, http.MethodGet, "/jobs/"+done.ID, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "it broke", decodeJob(t, b).Error)
	resp, _ = f.do(t, ctx, http.MethodDelete, "/jobs/"+done.ID, "")
	assert.Equal(t, http.StatusConflict, resp.StatusCode, "a finished job cannot be canceled")
}

func TestJobsHandlerErrors(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown id", http.MethodGet, "/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "", http.StatusNotFound},
		{"unknown id's result", http.MethodGet, "/jobs/nope/result", "", http.StatusNotFound},
		{"cancel of an unknown id", http.MethodDelete, "/jobs/nope", "", http.StatusNotFound},
		{"unknown subresource", http.MethodGet, "/jobs/x/y", "", http.StatusNotFound},
		{"GET of the collection", http.MethodGet, "/jobs", "", http.StatusMethodNotAllowed},
		{"PUT of a job", http.MethodPut, "/jobs/x", "", http.StatusMethodNotAllowed},
		{"refused by the StartFunc", http.MethodPost, "/jobs", "bad", http.StatusBadRequest},
		{"body over the limit", http.MethodPost, "/jobs", strings.Repeat("x", 65), http.StatusRequestEntityTooLarge},
		{"bad wait", http.MethodGet, "/jobs/x?wait=forever", "", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tt.method, f.srv.URL+tt.path, strings.NewReader(tt.body))
			require.NoError(t, err)
			resp, err := noRedirect().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			d, ok := problem.Read(resp)
			require.True(t, ok, "problem details")
			assert.Equal(t, tt.want, resp.StatusCode, "%s %s: %s", tt.method, tt.path, d.Detail)
		})
	}
}

func TestJobsHandlerExpiredIs404(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	job, g := f.submit(t, ctx, "hi")
	close(g.release)
	_, err := f.jobs.Wait(ctx, job.ID)
	require.NoError(t, err)
	f.jobClock.Advance(time.Hour)
	resp, _ := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID, "")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestJobsHandlerWaitReturnsOnCompletion(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	job, g := f.submit(t, ctx, "hi")
	type result struct {
		code int
		loc  string
	}
	got := make(chan result, 1)
	go func() {
		resp, _ := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID+"?wait=30s", "")
		got <- result{resp.StatusCode, resp.Header.Get("Location")}
	}()
	require.NoError(t, f.clock.BlockUntilTimers(ctx, 1), "the wait is held")
	close(g.release)
	select {
	case r := <-got:
		assert.Equal(t, http.StatusSeeOther, r.code)
		assert.Equal(t, "/jobs/"+job.ID+"/result", r.loc)
	case <-ctx.Done():
		t.Fatal("the held wait did not return")
	}
}

func TestJobsHandlerWaitEndsWithTheStatus(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{MaxWait: 10 * time.Second})
	job, g := f.submit(t, ctx, "hi")
	defer close(g.release)
	waitFor(t, ctx, g.started)
	got := make(chan *http.Response, 1)
	go func() {
		resp, _ := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID+"?wait=1m", "")
		got <- resp
	}()
	require.NoError(t, f.clock.BlockUntilTimers(ctx, 1))
	f.clock.Advance(10 * time.Second)
	select {
	case resp := <-got:
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Retry-After"), "after a long poll, ask again at once")
	case <-ctx.Done():
		t.Fatal("the wait did not end")
	}
}

func TestJobsHandlerShutdownReleasesWaits(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	job, g := f.submit(t, ctx, "hi")
	defer close(g.release)
	got := make(chan int, 1)
	go func() {
		resp, _ := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID+"?wait=30s", "")
		got <- resp.StatusCode
	}()
	require.NoError(t, f.clock.BlockUntilTimers(ctx, 1))
	require.NoError(t, f.h.Shutdown(ctx))
	assert.Equal(t, http.StatusOK, <-got)
	resp, _ := f.do(t, ctx, http.MethodGet, "/jobs/"+job.ID, "")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

func TestJobClientLongPollsToTheResult(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	c := &poll.JobClient{Wait: 30 * time.Second}
	go func() {
		g := <-f.gates
		require.NoError(t, f.clock.BlockUntilTimers(ctx, 1))
		close(g.release)
	}()
	job, err := c.Do(ctx, f.srv.URL+"/jobs", "text/plain", strings.NewReader("hi"))
	require.NoError(t, err)
	assert.Equal(t, poll.Succeeded, job.Status)
	assert.JSONEq(t, `{"echo":"hi"}`, string(job.Result))
}

func TestJobClientHonoursRetryAfter(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	clk := clock.NewFake(epoch)
	c := &poll.JobClient{}
	poll.SetJobClientClock(c, clk)

	_, loc, err := c.Submit(ctx, f.srv.URL+"/jobs", "text/plain", strings.NewReader("fail"))
	require.NoError(t, err)
	g := <-f.gates
	waitFor(t, ctx, g.started)
	got := make(chan error, 1)
	go func() {
		_, err := c.Await(ctx, loc)
		got <- err
	}()
	require.NoError(t, clk.BlockUntilTimers(ctx, 1))
	clk.Advance(time.Second - 1)
	require.Equal(t, 1, clk.Timers(), "waits the server's Retry-After of 1s")
	close(g.release)
	_, err = f.jobs.Wait(ctx, strings.TrimPrefix(loc, f.srv.URL+"/jobs/"))
	require.NoError(t, err)
	clk.Advance(1)
	select {
	case err := <-got:
		var je *poll.JobError
		require.ErrorAs(t, err, &je)
		assert.ErrorIs(t, err, poll.ErrJobFailed)
		assert.Equal(t, "it broke", je.Job.Error)
	case <-ctx.Done():
		t.Fatal("Await did not return")
	}
}

func TestJobClientTypedErrors(t *testing.T) {
	ctx := testCtx(t)
	f := newJobsHTTP(t, poll.JobsHandlerOptions{})
	c := &poll.JobClient{}
	_, err := c.Await(ctx, f.srv.URL+"/jobs/nope")
	assert.ErrorIs(t, err, poll.ErrNotFound)
	_, _, err = c.Submit(ctx, f.srv.URL+"/jobs", "text/plain", strings.NewReader("bad"))
	var se *poll.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusBadRequest, se.Code)
	assert.Equal(t, "bad input", se.Problem.Detail)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Await(cctx, f.srv.URL+"/jobs/nope")
	assert.ErrorIs(t, err, context.Canceled)
}

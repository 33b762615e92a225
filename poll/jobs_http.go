package poll

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/drain"
	"github.com/switchboard-go/switchboard/internal/problem"
)

// Defaults and bounds of JobsHandlerOptions.
const (
	DefaultBase          = "/jobs"
	DefaultMaxBodySize   = 1 << 20
	DefaultMaxRetryAfter = 30 * time.Second
)

// StartFunc turns a request into work: it reads and validates the request
// (its body is already bounded by MaxBodySize) and returns the Work to run.
// Its error refuses the request: an error with HTTPStatus() int chooses
// the status, an *http.MaxBytesError is 413, any other error is 400 with
// its text as the detail.
type StartFunc func(r *http.Request) (Work, error)

// JobsHandlerOptions configures NewJobsHandler. Nil or zero fields mean
// the defaults.
type JobsHandlerOptions struct {
	// Base is the path the handler is mounted at. Default DefaultBase
	// ("/jobs"). Location headers point below it.
	Base string
	// InlineResult answers GET {Base}/{id} for a succeeded job with 200
	// and the result in the status body, instead of 303 See Other to
	// {Base}/{id}/result.
	InlineResult bool
	// MaxWait caps the wait parameter of GET {Base}/{id}?wait=. Default
	// DefaultMaxWait (60s); waits are jittered down by up to a quarter.
	MaxWait time.Duration
	// MaxBodySize bounds the body of POST {Base}. Default
	// DefaultMaxBodySize (1 MiB).
	MaxBodySize int64
	// MaxRetryAfter caps the Retry-After the handler suggests. Default
	// DefaultMaxRetryAfter (30s).
	MaxRetryAfter time.Duration
	// Clock sets the clock behind waits and Retry-After. Default: the
	// real clock.
	Clock clock.Clock
}

// JobsHandler is the asynchronous request-reply pattern over HTTP for a
// Jobs. Mount it at its Base and below:
//
//	h := poll.NewJobsHandler(jobs, start, nil)
//	mux.Handle("/jobs", h)
//	mux.Handle("/jobs/", h)
//
// It serves:
//
//   - POST {Base}: calls the StartFunc and submits its work; 202 Accepted
//     with Location: {Base}/{id}, Retry-After and the job's status.
//   - GET {Base}/{id}: 200 with the status while it is pending or running,
//     with a Retry-After that grows with the job's age (1s for the first
//     10s, then a tenth of the age, up to MaxRetryAfter). Once succeeded:
//     303 See Other to {Base}/{id}/result (or 200 with the result inline,
//     InlineResult). Failed or canceled: 200 with the status and its error.
//   - GET {Base}/{id}?wait=30s: the same, held until the job finishes or
//     the wait ends (capped, jittered); any node answers when the Store and
//     Broker are shared. A held response has no Retry-After: ask again at
//     once.
//   - GET {Base}/{id}/result: 200 with the result (application/json) once
//     succeeded; 409 before, or when the job failed or was canceled.
//   - DELETE {Base}/{id}: cancels; 200 with the status. 409 when the job
//     already succeeded or failed.
//
// An unknown or expired id is 404; every error is RFC 9457 problem details.
type JobsHandler struct {
	jobs  *Jobs
	start StartFunc
	opts  JobsHandlerOptions
	clock clock.Clock

	base     context.Context // canceled by Shutdown
	shutdown context.CancelFunc
	reqs     drain.Group // refused and waited for by Shutdown
}

// NewJobsHandler returns the HTTP adapter of jobs; start turns a POST into
// work.
func NewJobsHandler(jobs *Jobs, start StartFunc, opts *JobsHandlerOptions) *JobsHandler {
	var o JobsHandlerOptions
	if opts != nil {
		o = *opts
	}
	o.Base = strings.TrimSuffix(o.Base, "/")
	if o.Base == "" {
		o.Base = DefaultBase
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.MaxBodySize <= 0 {
		o.MaxBodySize = DefaultMaxBodySize
	}
	if o.MaxRetryAfter < time.Second {
		o.MaxRetryAfter = DefaultMaxRetryAfter
	}
	base, cancel := context.WithCancel(context.Background())
	return &JobsHandler{jobs: jobs, start: start, opts: o, clock: clock.Or(o.Clock), base: base, shutdown: cancel}
}

// Shutdown answers every held wait at once with the job's current status,
// refuses new requests with 503, and waits for the handlers to return or
// ctx to end. It does not shut the Jobs down.
func (h *JobsHandler) Shutdown(ctx context.Context) error {
	h.reqs.Close()
	h.shutdown()
	return h.reqs.Wait(ctx)
}

var errNotSucceeded = errors.New("poll: the job has no result")

func (h *JobsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.reqs.Enter() {
		writeProblem(w, problemFor(ErrClosed))
		return
	}
	defer h.reqs.Leave()
	rest, ok := strings.CutPrefix(r.URL.Path, h.opts.Base)
	if !ok || (rest != "" && rest[0] != '/') {
		writeProblem(w, problem.New(http.StatusNotFound, "not a jobs path"))
		return
	}
	rest = strings.TrimPrefix(rest, "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch {
	case id == "":
		if r.Method != http.MethodPost {
			notAllowed(w, http.MethodPost)
			return
		}
		h.submit(w, r)
	case sub == "":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.status(w, r, id)
		case http.MethodDelete:
			job, err := h.jobs.Cancel(r.Context(), id)
			if err != nil {
				writeProblem(w, problemFor(err))
				return
			}
			writeJob(w, http.StatusOK, job, false)
		default:
			notAllowed(w, "GET, HEAD, DELETE")
		}
	case sub == "result":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			notAllowed(w, "GET, HEAD")
			return
		}
		h.result(w, r, id)
	default:
		writeProblem(w, problem.New(http.StatusNotFound, "not a jobs path"))
	}
}

func notAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeProblem(w, problem.New(http.StatusMethodNotAllowed, "use "+allow))
}

func (h *JobsHandler) submit(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > h.opts.MaxBodySize {
		writeProblem(w, problemFor(&http.MaxBytesError{Limit: h.opts.MaxBodySize}))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBodySize)
	work, err := h.start(r)
	if err != nil {
		var sc interface{ HTTPStatus() int }
		var mb *http.MaxBytesError
		if errors.As(err, &sc) || errors.As(err, &mb) {
			writeProblem(w, problemFor(err))
		} else {
			writeProblem(w, problem.New(http.StatusBadRequest, err.Error()))
		}
		return
	}
	if work == nil {
		writeProblem(w, problem.New(http.StatusBadRequest, "nothing to do"))
		return
	}
	job, err := h.jobs.Submit(r.Context(), work)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	w.Header().Set("Location", h.opts.Base+"/"+job.ID)
	retryAfterHeader(w, h.retryAfter(job))
	writeJob(w, http.StatusAccepted, job, false)
}

func (h *JobsHandler) status(w http.ResponseWriter, r *http.Request, id string) {
	wait, err := parseWait(r.URL.Query().Get("wait"), 0, h.opts.MaxWait)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	var job Job
	if wait > 0 {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(h.base, cancel)
		defer stop()
		t := h.clock.AfterFunc(jitter(wait), cancel)
		defer t.Stop()
		job, err = h.jobs.Wait(ctx, id)
		if err != nil && ctx.Err() != nil {
			if r.Context().Err() != nil {
				return // the client went away
			}
			job, err = h.jobs.Get(r.Context(), id)
		}
	} else {
		job, err = h.jobs.Get(r.Context(), id)
	}
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	switch {
	case job.Status == Succeeded && !h.opts.InlineResult:
		w.Header().Set("Location", h.opts.Base+"/"+job.ID+"/result")
		writeJob(w, http.StatusSeeOther, job, false)
	case job.Status.Done():
		writeJob(w, http.StatusOK, job, true)
	default:
		if wait == 0 {
			retryAfterHeader(w, h.retryAfter(job))
		}
		writeJob(w, http.StatusOK, job, false)
	}
}

func (h *JobsHandler) result(w http.ResponseWriter, r *http.Request, id string) {
	job, err := h.jobs.Get(r.Context(), id)
	if err != nil {
		writeProblem(w, problemFor(err))
		return
	}
	if job.Status != Succeeded {
		d := problemFor(errNotSucceeded)
		d.Detail = "the job is " + string(job.Status) + ": it has no result"
		d.Extensions = map[string]any{"status": job.Status}
		if !job.Status.Done() {
			retryAfterHeader(w, h.retryAfter(job))
		}
		writeProblem(w, d)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(job.Result, '\n'))
}

// retryAfter suggests, in whole seconds, when to ask about job again: 1s
// for its first 10s, then a tenth of its age, up to MaxRetryAfter.
func (h *JobsHandler) retryAfter(job Job) int {
	age := h.clock.Now().Sub(job.Created)
	d := min(max(age/10, time.Second), h.opts.MaxRetryAfter)
	return int((d + time.Second - 1) / time.Second)
}

// writeJob sends job as JSON, with its result only when withResult.
func writeJob(w http.ResponseWriter, code int, job Job, withResult bool) {
	if !withResult {
		job.Result = nil
	}
	b, _ := json.Marshal(job) // only strings, numbers, times and raw JSON we marshalled
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

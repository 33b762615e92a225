package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/queue"
)

// Status is where a job is in its life.
type Status string

// The statuses of a job. Pending and Running are in progress; the other
// three are final.
const (
	Pending   Status = "pending"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
	Canceled  Status = "canceled"
)

// Done reports whether s is final: Succeeded, Failed or Canceled.
func (s Status) Done() bool { return s == Succeeded || s == Failed || s == Canceled }

// Job is the state of one job, as a store keeps it and as the HTTP adapter
// sends it (JSON).
type Job struct {
	// ID is opaque and unique: time-sortable, safe in a URL path and in a
	// pubsub subject.
	ID     string `json:"id"`
	Status Status `json:"status"`
	// Progress is the last number the work reported (by convention a
	// fraction from 0 to 1); Message the text that came with it.
	Progress float64 `json:"progress"`
	Message  string  `json:"message,omitempty"`
	// Result is the work's result as JSON, once Succeeded.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is the work's error text, once Failed or Canceled.
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Expires is when a finished job is forgotten; zero while in progress.
	Expires time.Time `json:"expires,omitzero"`
}

// Work is what a job does. ctx ends when the job is canceled (Jobs.Cancel,
// on any node) or Jobs shuts down; work should then return promptly.
// report records progress, best effort: it never blocks on more than one
// store write and ignores its errors. The result is marshalled with
// encoding/json (return a json.RawMessage to pass JSON through).
type Work func(ctx context.Context, report func(progress float64, message string)) (any, error)

// Errors of Jobs and stores. Test for them with errors.Is.
var (
	// ErrNotFound: no job with that id, or it expired.
	ErrNotFound = errors.New("poll: job not found")
	// ErrFinished: the job already finished, so it cannot be canceled.
	ErrFinished = errors.New("poll: job already finished")
	// ErrTooManyJobs: the runner's pending queue or the store is full.
	ErrTooManyJobs = errors.New("poll: too many jobs")
	// ErrClosed: Jobs (or its runner) has been shut down.
	ErrClosed = errors.New("poll: closed")
	// ErrShutdown is the Error text of jobs that Jobs.Shutdown interrupted
	// or never started.
	ErrShutdown = errors.New("poll: jobs shut down before the job finished")
	// ErrResultTooLarge is the Error text of jobs whose result exceeded
	// MaxResultSize.
	ErrResultTooLarge = errors.New("poll: job result too large")
)

// Defaults and bounds of JobsOptions.
const (
	DefaultLimit         = 16
	DefaultMaxPending    = 10_000
	DefaultTTL           = time.Hour
	DefaultTopic         = "poll.jobs"
	DefaultMaxResultSize = 1 << 20
	// MaxMessageSize bounds a progress message and an error text, in
	// bytes; longer ones are cut (at a UTF-8 boundary).
	MaxMessageSize = 4 << 10
)

// Broker is what Jobs needs of pubsub to tell every node that a job
// finished or was canceled. Every pubsub backend implements it.
type Broker interface {
	pubsub.Publisher
	pubsub.Subscriber
}

// JobsOptions configures NewJobs. The zero value (or nil) gives an
// in-memory store, a private in-memory broker, and local goroutines.
type JobsOptions struct {
	// Store keeps the jobs. Default: NewMemoryStore(0). Share a store (say
	// pgstore) between nodes, and Broker too, so that any node answers for
	// any job.
	Store Store
	// Broker carries finished-job and cancel notifications between nodes.
	// Default: a private in-memory broker, which Shutdown closes (a given
	// one is the caller's to close).
	Broker Broker
	// Topic prefixes the notification subjects: Topic+".done.<id>" and
	// Topic+".cancel.<id>". Default DefaultTopic.
	Topic string
	// Runner decides where work submitted with Submit runs. Default
	// NewLocalRunner(Limit, MaxPending). Shutdown shuts it down.
	Runner Runner
	// Queue, if set, is where SubmitKind sends work, so that a queue.Worker
	// on any node runs it (see QueueHandler). Nil: SubmitKind runs defined
	// kinds on the Runner.
	Queue *queue.Queue
	// Limit bounds the jobs the default runner runs at once; beyond it they
	// wait as Pending. Default DefaultLimit. Ignored with a Runner.
	Limit int
	// MaxPending bounds the jobs the default runner keeps waiting; past it
	// Submit fails with ErrTooManyJobs. Default DefaultMaxPending. Ignored
	// with a Runner.
	MaxPending int
	// TTL is how long a finished job stays visible. Default DefaultTTL.
	// Expired jobs are invisible at once and deleted by a sweep that runs
	// every min(TTL, 1 minute).
	TTL time.Duration
	// MaxResultSize bounds a result's JSON; a larger one fails the job
	// with ErrResultTooLarge. Default DefaultMaxResultSize (1 MiB).
	MaxResultSize int
	// Clock sets the clock behind job times, expiry and sweeps. Default:
	// the real clock.
	Clock clock.Clock
}

// Jobs starts work and tracks it: the server side of short polling (the
// asynchronous request-reply pattern). Submit starts work and returns at
// once with a Job whose ID the caller polls with Get or Wait; Cancel stops
// it. All methods are safe for concurrent use.
//
// Jobs owns two goroutines (the expiry sweep and the cancel listener) and,
// through the default runner, the goroutines that run work: Shutdown stops
// them all.
type Jobs struct {
	store   Store
	broker  Broker
	private *pubsub.Broker // the default broker, closed by Shutdown
	topic   string
	runner  Runner
	ttl     time.Duration
	maxRes  int
	clock   clock.Clock
	ids     ids.Generator

	stop context.CancelFunc // ends the sweep and the listener
	bg   sync.WaitGroup

	mu      sync.Mutex
	running map[string]context.CancelFunc // work running on this node; guarded by mu
	kinds   map[string]KindWork           // work by name, for SubmitKind and QueueHandler; guarded by mu
	queue   *queue.Queue
}

// NewJobs returns ready Jobs. Call Shutdown when done.
func NewJobs(opts *JobsOptions) *Jobs {
	var o JobsOptions
	if opts != nil {
		o = *opts
	}
	if o.Limit <= 0 {
		o.Limit = DefaultLimit
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	if o.MaxResultSize <= 0 {
		o.MaxResultSize = DefaultMaxResultSize
	}
	j := &Jobs{
		store: o.Store, broker: o.Broker, topic: o.Topic, runner: o.Runner,
		ttl: o.TTL, maxRes: o.MaxResultSize, clock: clock.Or(o.Clock),
		running: make(map[string]context.CancelFunc),
		kinds:   make(map[string]KindWork), queue: o.Queue,
	}
	if j.store == nil {
		j.store = NewMemoryStore(0)
	}
	if j.broker == nil {
		j.private = pubsub.NewBroker(pubsub.WithClock(j.clock))
		j.broker = j.private
	}
	if j.runner == nil {
		j.runner = NewLocalRunner(o.Limit, o.MaxPending)
	}
	ctx, cancel := context.WithCancel(context.Background())
	j.stop = cancel
	// Subscribe before returning, so that no cancel published after NewJobs
	// returns is missed.
	cancels, err := j.broker.Subscribe(ctx, j.topic+".cancel.*", pubsub.Overflow(pubsub.DropOldest))
	if err == nil {
		j.bg.Go(func() { j.listen(ctx, cancels) })
	}
	tick := j.clock.NewTicker(min(j.ttl, time.Minute))
	j.bg.Go(func() { j.sweep(ctx, tick) })
	return j
}

// Shutdown stops accepting work, cancels the work running on this node and
// waits, until ctx ends, for the runner to finish: jobs it interrupted or
// never started are recorded as Failed with ErrShutdown. It then stops the
// sweep and the listener and closes the private broker, if any.
func (j *Jobs) Shutdown(ctx context.Context) error {
	err := j.runner.Shutdown(ctx)
	j.stop()
	j.bg.Wait()
	if j.private != nil {
		j.private.Close()
	}
	return err
}

func (j *Jobs) doneTopic(id string) string   { return j.topic + ".done." + id }
func (j *Jobs) cancelTopic(id string) string { return j.topic + ".cancel." + id }

// Submit records a Pending job and hands w to the runner, which starts it
// now or, past its limit, later. It returns the job at once. It fails with
// ErrTooManyJobs when the runner or the store is full, ErrClosed after
// Shutdown.
func (j *Jobs) Submit(ctx context.Context, w Work) (Job, error) {
	now := j.clock.Now()
	job := Job{ID: j.ids.ID(now), Status: Pending, Created: now, Updated: now}
	if err := j.store.Create(ctx, job); err != nil {
		return Job{}, err
	}
	id := job.ID
	if err := j.runner.Start(id, func(ctx context.Context) { _ = j.execute(ctx, id, w, false) }); err != nil {
		_ = j.store.Delete(context.WithoutCancel(ctx), id)
		return Job{}, err
	}
	return job, nil
}

// Get returns the job with id, or ErrNotFound when there is none or it has
// expired.
func (j *Jobs) Get(ctx context.Context, id string) (Job, error) {
	job, err := j.store.Get(ctx, id)
	if err != nil {
		return Job{}, err
	}
	if j.expired(job) {
		return Job{}, ErrNotFound
	}
	return job, nil
}

func (j *Jobs) expired(job Job) bool {
	return !job.Expires.IsZero() && !j.clock.Now().Before(job.Expires)
}

// Wait returns the job once it has finished, on whichever node it ran
// (the notification travels through the Broker). When ctx ends first it
// returns the job as it last saw it, with ctx.Err().
func (j *Jobs) Wait(ctx context.Context, id string) (Job, error) {
	// Subscribe first, then look: a finish between the two is still seen.
	sub, err := j.broker.Subscribe(context.WithoutCancel(ctx), j.doneTopic(id), pubsub.Buffer(1), pubsub.Overflow(pubsub.DropOldest))
	if err != nil {
		return Job{}, err
	}
	defer sub.Close()
	for {
		job, err := j.Get(ctx, id)
		if err != nil || job.Status.Done() {
			return job, err
		}
		if _, err := sub.Next(ctx); err != nil {
			if ctx.Err() != nil {
				return job, ctx.Err()
			}
			if !errors.Is(err, pubsub.ErrGap) {
				return job, err
			}
		}
	}
}

// Cancel marks the job Canceled and cancels its work's context, on
// whichever node it runs. Canceling a canceled job returns it again;
// canceling one that succeeded or failed returns it with ErrFinished.
func (j *Jobs) Cancel(ctx context.Context, id string) (Job, error) {
	if _, err := j.Get(ctx, id); err != nil {
		return Job{}, err
	}
	var already bool
	job, err := j.store.Update(ctx, id, func(job *Job) error {
		switch {
		case job.Status == Canceled:
			already = true
			return errUnchanged
		case job.Status.Done():
			return ErrFinished
		}
		j.finish(job, Canceled, nil, "canceled")
		return nil
	})
	switch {
	case already, errors.Is(err, ErrFinished):
		job, gerr := j.Get(ctx, id)
		if gerr != nil {
			return Job{}, gerr
		}
		if already {
			return job, nil
		}
		return job, ErrFinished
	case err != nil:
		return Job{}, err
	}
	j.cancelLocal(id)
	j.notify(ctx, j.cancelTopic(id), Canceled)
	j.notify(ctx, j.doneTopic(id), Canceled)
	return job, nil
}

// errUnchanged makes Store.Update leave a job as it is.
var errUnchanged = errors.New("poll: unchanged")

func (j *Jobs) finish(job *Job, s Status, result json.RawMessage, errText string) {
	now := j.clock.Now()
	job.Status = s
	job.Result = result
	job.Error = truncate(errText)
	job.Updated = now
	job.Expires = now.Add(j.ttl)
}

func (j *Jobs) notify(ctx context.Context, topic string, s Status) {
	// Best effort: a waiter that misses it still sees the final state on
	// its next look (its wait ends, then it reads the store).
	_, _ = j.broker.Publish(context.WithoutCancel(ctx), pubsub.Message{Topic: topic, Data: []byte(s)})
}

func (j *Jobs) cancelLocal(id string) {
	j.mu.Lock()
	cancel := j.running[id]
	j.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// execute runs one job's work on this node and records its outcome. ctx
// is the runner's: it ends on Shutdown. From a queue (requeue), a job that
// a crashed or stopped worker left Running is run again, and a shutdown
// returns ctx's error without recording anything, so the queue hands the
// job to another worker.
func (j *Jobs) execute(ctx context.Context, id string, w Work, requeue bool) error {
	store := context.WithoutCancel(ctx)
	if ctx.Err() != nil { // shut down before it started
		if requeue {
			return ctx.Err()
		}
		j.record(store, id, Failed, nil, ErrShutdown.Error())
		return nil
	}
	if _, err := j.store.Update(store, id, func(job *Job) error {
		if job.Status != Pending && (!requeue || job.Status != Running) {
			return errUnchanged // canceled while pending, or already done
		}
		job.Status = Running
		job.Updated = j.clock.Now()
		return nil
	}); err != nil {
		if requeue && !errors.Is(err, errUnchanged) && !errors.Is(err, ErrNotFound) {
			return err // the store is unreachable: let the queue retry
		}
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.mu.Lock()
	j.running[id] = cancel
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		delete(j.running, id)
		j.mu.Unlock()
	}()
	// A cancel that came between the update and the registration.
	if job, err := j.store.Get(store, id); err == nil && job.Status.Done() {
		return nil
	}

	report := func(progress float64, message string) {
		_, _ = j.store.Update(store, id, func(job *Job) error {
			if job.Status != Running {
				return errUnchanged
			}
			job.Progress = progress
			job.Message = truncate(message)
			job.Updated = j.clock.Now()
			return nil
		})
	}
	res, err := run(wctx, w, report)
	switch {
	case ctx.Err() != nil && requeue:
		return ctx.Err()
	case ctx.Err() != nil:
		j.record(store, id, Failed, nil, ErrShutdown.Error())
	case wctx.Err() != nil:
		// Canceled: Cancel already recorded it.
	case err != nil:
		j.record(store, id, Failed, nil, err.Error())
	default:
		data, merr := json.Marshal(res)
		switch {
		case merr != nil:
			j.record(store, id, Failed, nil, "poll: marshalling the result: "+merr.Error())
		case len(data) > j.maxRes:
			j.record(store, id, Failed, nil, fmt.Sprintf("%v: %d bytes, limit %d", ErrResultTooLarge, len(data), j.maxRes))
		default:
			j.record(store, id, Succeeded, data, "")
		}
	}
	return nil
}

// run calls w, turning a panic into an error.
func run(ctx context.Context, w Work, report func(float64, string)) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("poll: job panicked: %v", p)
		}
	}()
	return w(ctx, report)
}

// record stores a final status, unless the job already has one, and tells
// the waiters.
func (j *Jobs) record(ctx context.Context, id string, s Status, result json.RawMessage, errText string) {
	_, err := j.store.Update(ctx, id, func(job *Job) error {
		if job.Status.Done() {
			return errUnchanged
		}
		j.finish(job, s, result, errText)
		return nil
	})
	if err == nil {
		j.notify(ctx, j.doneTopic(id), s)
	}
}

// listen cancels local work when a cancel arrives from any node.
func (j *Jobs) listen(ctx context.Context, sub pubsub.Subscription) {
	defer sub.Close()
	prefix := len(j.topic) + len(".cancel.")
	for {
		m, err := sub.Next(ctx)
		switch {
		case err == nil:
			if len(m.Topic) > prefix {
				j.cancelLocal(m.Topic[prefix:])
			}
		case errors.Is(err, pubsub.ErrGap):
		default:
			return // ctx ended (Shutdown) or the broker closed
		}
	}
}

// sweep deletes expired jobs from the store.
func (j *Jobs) sweep(ctx context.Context, t clock.Ticker) {
	defer t.Stop()
	for {
		select {
		case <-t.C():
			_, _ = j.store.DeleteExpired(ctx, j.clock.Now())
		case <-ctx.Done():
			return
		}
	}
}

func truncate(s string) string {
	if len(s) <= MaxMessageSize {
		return s
	}
	i := MaxMessageSize
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/switchboard-go/switchboard/queue"
)

// KindWork is work registered by name with Define, so that any node can run
// it: all a job carries across the network is its id, its kind and its
// input (JSON). The rest is as Work.
type KindWork func(ctx context.Context, input json.RawMessage, report func(progress float64, message string)) (any, error)

// MaxInputSize bounds the JSON input of SubmitKind.
const MaxInputSize = 256 << 10

// ErrUnknownKind: SubmitKind or a queued job named a kind that was not
// defined (on this node, for work that runs here).
var ErrUnknownKind = errors.New("poll: unknown job kind")

// Define registers the work of a kind. Every node that runs jobs of the
// kind (every node with a queue.Worker running QueueHandler, or every node
// that calls SubmitKind when Jobs has no Queue) must define it, before it
// starts taking jobs. Defining a kind again replaces it.
func (j *Jobs) Define(kind string, w KindWork) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.kinds[kind] = w
}

func (j *Jobs) kind(name string) (KindWork, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	w, ok := j.kinds[name]
	return w, ok
}

// envelope is what a queue carries for a job.
type envelope struct {
	ID    string          `json:"id"`
	Kind  string          `json:"kind"`
	Input json.RawMessage `json:"input,omitempty"`
}

// SubmitKind records a Pending job of a defined kind with input (marshalled
// to JSON, at most MaxInputSize bytes) and returns it at once. With a Queue
// in JobsOptions the job is enqueued, and whichever node's queue.Worker
// takes it runs it (QueueHandler): the job survives this node, and a worker
// that crashes mid-job leaves it to be run again by another. Without one it
// runs on the Runner, as Submit does. Errors are Submit's, plus
// ErrUnknownKind and the queue's.
func (j *Jobs) SubmitKind(ctx context.Context, kind string, input any) (Job, error) {
	data, err := json.Marshal(input)
	if err != nil {
		return Job{}, fmt.Errorf("poll: marshalling the input: %w", err)
	}
	if len(data) > MaxInputSize {
		return Job{}, fmt.Errorf("poll: input of %d bytes, limit %d", len(data), MaxInputSize)
	}
	if j.queue == nil {
		w, ok := j.kind(kind)
		if !ok {
			return Job{}, fmt.Errorf("%w: %q", ErrUnknownKind, kind)
		}
		return j.Submit(ctx, func(ctx context.Context, report func(float64, string)) (any, error) {
			return w(ctx, data, report)
		})
	}
	now := j.clock.Now()
	job := Job{ID: j.ids.ID(now), Status: Pending, Created: now, Updated: now}
	if err := j.store.Create(ctx, job); err != nil {
		return Job{}, err
	}
	body, err := json.Marshal(envelope{ID: job.ID, Kind: kind, Input: data})
	if err == nil {
		// The job id as the dedup key: a retried SubmitKind cannot queue
		// the same job twice.
		_, err = j.queue.Enqueue(ctx, queue.Message{Body: body, DedupKey: job.ID})
	}
	if err != nil {
		_ = j.store.Delete(context.WithoutCancel(ctx), job.ID)
		return Job{}, fmt.Errorf("poll: enqueueing the job: %w", err)
	}
	return job, nil
}

// QueueHandler returns the handler a queue.Worker runs to execute the jobs
// that SubmitKind queued, on any node that shares the store and the
// broker:
//
//	w := queue.NewWorker(q, jobs.QueueHandler(), queue.WorkerOptions{Concurrency: 8})
//	go w.Run(ctx)
//
// A job's failure is the job's (recorded as Failed, and acked: the queue does
// not retry it); a message that is not a job, or names a kind this node
// did not define, fails the job and goes to the dead-letter queue. When the
// worker shuts down mid-job the message is given back, and the next worker
// runs the job again.
func (j *Jobs) QueueHandler() queue.Handler {
	return func(ctx context.Context, d queue.Delivery) error {
		var env envelope
		if err := json.Unmarshal(d.Body, &env); err != nil || env.ID == "" {
			return queue.Permanent(fmt.Errorf("poll: not a job: %v", err))
		}
		w, ok := j.kind(env.Kind)
		if !ok {
			err := fmt.Errorf("%w: %q", ErrUnknownKind, env.Kind)
			j.record(context.WithoutCancel(ctx), env.ID, Failed, nil, err.Error())
			return queue.Permanent(err)
		}
		return j.execute(ctx, env.ID, func(ctx context.Context, report func(float64, string)) (any, error) {
			return w(ctx, env.Input, report)
		}, true)
	}
}

package poll_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/queue"
)

type resizeInput struct {
	Image string `json:"image"`
	Width int    `json:"width"`
}

func resize(ctx context.Context, input json.RawMessage, report func(float64, string)) (any, error) {
	var in resizeInput
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, err
	}
	report(0.5, "resizing")
	return map[string]any{"image": in.Image, "width": in.Width}, nil
}

func TestSubmitKindRunsLocallyWithoutAQueue(t *testing.T) {
	ctx := testCtx(t)
	j, _ := newJobs(t, poll.JobsOptions{})
	j.Define("resize", resize)
	job, err := j.SubmitKind(ctx, "resize", resizeInput{Image: "a.png", Width: 64})
	require.NoError(t, err)
	done, err := j.Wait(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Succeeded, done.Status)
	assert.JSONEq(t, `{"image":"a.png","width":64}`, string(done.Result))

	_, err = j.SubmitKind(ctx, "nope", nil)
	assert.ErrorIs(t, err, poll.ErrUnknownKind)
}

// Two nodes share a store, a broker and a queue: the one that submits has
// no worker, the other runs the job; the first sees it finish.
func TestSubmitKindRunsOnAQueueWorkerOfAnotherNode(t *testing.T) {
	ctx := testCtx(t)
	store := poll.NewMemoryStore(0)
	broker := pubsub.NewBroker()
	defer broker.Close()
	mem := queue.NewMemory(queue.MemoryOptions{})
	defer mem.Close()
	q, err := queue.New(mem, "jobs")
	require.NoError(t, err)

	producer, _ := newJobs(t, poll.JobsOptions{Store: store, Broker: broker, Queue: q})
	worker, _ := newJobs(t, poll.JobsOptions{Store: store, Broker: broker, Queue: q})
	worker.Define("resize", resize)
	w := queue.NewWorker(q, worker.QueueHandler(), queue.WorkerOptions{Concurrency: 2})
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(ctx) }()
	defer func() {
		require.NoError(t, w.Shutdown(ctx))
		<-runDone
	}()

	job, err := producer.SubmitKind(ctx, "resize", resizeInput{Image: "b.png", Width: 32})
	require.NoError(t, err)
	assert.Equal(t, poll.Pending, job.Status)
	done, err := producer.Wait(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Succeeded, done.Status)
	assert.JSONEq(t, `{"image":"b.png","width":32}`, string(done.Result))

	// A kind no worker defines fails the job and dead-letters the message.
	job, err = producer.SubmitKind(ctx, "unknown", 1)
	require.NoError(t, err)
	done, err = producer.Wait(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Failed, done.Status)
	assert.Contains(t, done.Error, "unknown job kind")
	require.Eventually(t, func() bool {
		st, err := q.Stats(ctx)
		return err == nil && st.Dead == 1
	}, 10*time.Second, time.Millisecond)
}

// A worker that stops mid-job gives the message back; the next worker runs
// the job again from the start and it succeeds.
func TestQueuedJobSurvivesAWorkerThatStops(t *testing.T) {
	ctx := testCtx(t)
	store := poll.NewMemoryStore(0)
	broker := pubsub.NewBroker()
	defer broker.Close()
	mem := queue.NewMemory(queue.MemoryOptions{})
	defer mem.Close()
	q, err := queue.New(mem, "jobs")
	require.NoError(t, err)
	jobs, _ := newJobs(t, poll.JobsOptions{Store: store, Broker: broker, Queue: q})

	started := make(chan int, 2)
	attempt := 0
	jobs.Define("slow", func(ctx context.Context, _ json.RawMessage, _ func(float64, string)) (any, error) {
		attempt++
		started <- attempt
		if attempt == 1 {
			<-ctx.Done() // the first worker is stopped mid-job
			return nil, ctx.Err()
		}
		return "done on attempt 2", nil
	})
	job, err := jobs.SubmitKind(ctx, "slow", nil)
	require.NoError(t, err)

	first := queue.NewWorker(q, jobs.QueueHandler(), queue.WorkerOptions{Concurrency: 1})
	firstDone := make(chan error, 1)
	go func() { firstDone <- first.Run(ctx) }()
	require.Equal(t, 1, <-started)
	shutCtx, cancel := context.WithCancel(ctx)
	cancel() // no grace: give the running job back at once
	err = first.Shutdown(shutCtx)
	require.True(t, err == nil || errors.Is(err, context.Canceled), "Shutdown: %v", err)
	<-firstDone
	running, err := jobs.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Running, running.Status, "not failed: another worker will run it")

	second := queue.NewWorker(q, jobs.QueueHandler(), queue.WorkerOptions{Concurrency: 1})
	secondDone := make(chan error, 1)
	go func() { secondDone <- second.Run(ctx) }()
	defer func() {
		require.NoError(t, second.Shutdown(ctx))
		<-secondDone
	}()
	require.Equal(t, 2, <-started)
	done, err := jobs.Wait(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Succeeded, done.Status)
	assert.JSONEq(t, `"done on attempt 2"`, string(done.Result))
}

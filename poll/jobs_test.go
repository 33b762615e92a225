package poll_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
)

func newJobs(t *testing.T, o poll.JobsOptions) (*poll.Jobs, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(epoch)
	if o.Clock == nil {
		o.Clock = clk
	}
	j := poll.NewJobs(&o)
	t.Cleanup(func() { require.NoError(t, j.Shutdown(context.Background())) })
	return j, clk
}

// gate is work that reports it started, then waits to be released.
type gate struct {
	started chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{started: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) work(result any, err error) poll.Work {
	return func(ctx context.Context, report func(float64, string)) (any, error) {
		report(0.5, "halfway")
		close(g.started)
		select {
		case <-g.release:
			return result, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func waitFor(t *testing.T, ctx context.Context, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-ctx.Done():
		t.Fatal("timed out")
	}
}

func TestJobsRunWorkAndRecordTheResult(t *testing.T) {
	ctx := testCtx(t)
	j, _ := newJobs(t, poll.JobsOptions{})
	g := newGate()
	job, err := j.Submit(ctx, g.work(map[string]int{"n": 42}, nil))
	require.NoError(t, err)
	assert.Equal(t, poll.Pending, job.Status)
	assert.Equal(t, epoch, job.Created)

	waitFor(t, ctx, g.started)
	got, err := j.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Running, got.Status)
	assert.Equal(t, 0.5, got.Progress)
	assert.Equal(t, "halfway", got.Message)

	close(g.release)
	done, err := j.Wait(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Succeeded, done.Status)
	assert.JSONEq(t, `{"n":42}`, string(done.Result))
	assert.Equal(t, epoch.Add(poll.DefaultTTL), done.Expires)
}

func TestJobsRecordFailures(t *testing.T) {
	tests := []struct {
		name string
		work poll.Work
		want string
	}{
		{"an error", func(context.Context, func(float64, string)) (any, error) { return nil, errors.New("boom") }, "boom"},
		{"a panic", func(context.Context, func(float64, string)) (any, error) { panic("oops") }, "panicked: oops"},
		{"a result too large", func(context.Context, func(float64, string)) (any, error) { return strings.Repeat("x", 100), nil }, "too large"},
		{"a result that is not JSON", func(context.Context, func(float64, string)) (any, error) { return make(chan int), nil }, "marshalling"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			j, _ := newJobs(t, poll.JobsOptions{MaxResultSize: 50})
			job, err := j.Submit(ctx, tt.work)
			require.NoError(t, err)
			done, err := j.Wait(ctx, job.ID)
			require.NoError(t, err)
			assert.Equal(t, poll.Failed, done.Status)
			assert.Contains(t, done.Error, tt.want)
		})
	}
}

func TestJobsLimitKeepsTheRestPending(t *testing.T) {
	ctx := testCtx(t)
	j, _ := newJobs(t, poll.JobsOptions{Limit: 1, MaxPending: 1})
	a, b := newGate(), newGate()
	ja, err := j.Submit(ctx, a.work("a", nil))
	require.NoError(t, err)
	jb, err := j.Submit(ctx, b.work("b", nil))
	require.NoError(t, err)
	waitFor(t, ctx, a.started)

	got, err := j.Get(ctx, jb.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Pending, got.Status, "past the limit a job waits")
	_, err = j.Submit(ctx, newGate().work(nil, nil))
	assert.ErrorIs(t, err, poll.ErrTooManyJobs, "past MaxPending")

	close(a.release)
	waitFor(t, ctx, b.started)
	close(b.release)
	for _, id := range []string{ja.ID, jb.ID} {
		done, err := j.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, poll.Succeeded, done.Status)
	}
}

func TestJobsCancel(t *testing.T) {
	ctx := testCtx(t)
	j, _ := newJobs(t, poll.JobsOptions{Limit: 1})
	g, queued := newGate(), newGate()
	running, err := j.Submit(ctx, g.work(nil, nil))
	require.NoError(t, err)
	pending, err := j.Submit(ctx, queued.work(nil, nil))
	require.NoError(t, err)
	waitFor(t, ctx, g.started)

	got, err := j.Cancel(ctx, running.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Canceled, got.Status)
	got, err = j.Cancel(ctx, running.ID)
	require.NoError(t, err, "canceling again is fine")
	assert.Equal(t, poll.Canceled, got.Status)

	got, err = j.Cancel(ctx, pending.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Canceled, got.Status, "a pending job is canceled before it starts")

	ok := newGate()
	close(ok.release)
	fin, err := j.Submit(ctx, ok.work(1, nil))
	require.NoError(t, err)
	_, err = j.Wait(ctx, fin.ID)
	require.NoError(t, err)
	_, err = j.Cancel(ctx, fin.ID)
	assert.ErrorIs(t, err, poll.ErrFinished)
	_, err = j.Cancel(ctx, "nope")
	assert.ErrorIs(t, err, poll.ErrNotFound)
}

func TestJobsCancelReachesTheWorkContext(t *testing.T) {
	ctx := testCtx(t)
	j, _ := newJobs(t, poll.JobsOptions{})
	stopped := make(chan error, 1)
	started := make(chan struct{})
	job, err := j.Submit(ctx, func(wctx context.Context, _ func(float64, string)) (any, error) {
		close(started)
		<-wctx.Done()
		stopped <- wctx.Err()
		return nil, wctx.Err()
	})
	require.NoError(t, err)
	waitFor(t, ctx, started)
	_, err = j.Cancel(ctx, job.ID)
	require.NoError(t, err)
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the work's context was not canceled")
	}
}

func TestJobsExpire(t *testing.T) {
	ctx := testCtx(t)
	store := poll.NewMemoryStore(0)
	j, clk := newJobs(t, poll.JobsOptions{TTL: time.Minute, Store: store})
	g := newGate()
	close(g.release)
	job, err := j.Submit(ctx, g.work(1, nil))
	require.NoError(t, err)
	_, err = j.Wait(ctx, job.ID)
	require.NoError(t, err)

	clk.Advance(time.Minute - 1)
	_, err = j.Get(ctx, job.ID)
	require.NoError(t, err, "visible until its TTL")
	clk.Advance(1)
	_, err = j.Get(ctx, job.ID)
	assert.ErrorIs(t, err, poll.ErrNotFound, "invisible once expired")
	require.Eventually(t, func() bool {
		_, err := store.Get(ctx, job.ID)
		return errors.Is(err, poll.ErrNotFound)
	}, 10*time.Second, time.Millisecond, "the sweep deletes it")
}

func TestJobsShutdownFailsUnfinishedJobs(t *testing.T) {
	ctx := testCtx(t)
	store := poll.NewMemoryStore(0)
	j := poll.NewJobs(&poll.JobsOptions{Store: store, Limit: 1, Clock: clock.NewFake(epoch)})
	g := newGate()
	running, err := j.Submit(ctx, g.work(nil, nil))
	require.NoError(t, err)
	pending, err := j.Submit(ctx, newGate().work(nil, nil))
	require.NoError(t, err)
	waitFor(t, ctx, g.started)

	require.NoError(t, j.Shutdown(ctx))
	for _, id := range []string{running.ID, pending.ID} {
		job, err := store.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, poll.Failed, job.Status)
		assert.Equal(t, poll.ErrShutdown.Error(), job.Error)
	}
	_, err = j.Submit(ctx, g.work(nil, nil))
	assert.ErrorIs(t, err, poll.ErrClosed)
}

func TestJobsWaitEndsWithTheContext(t *testing.T) {
	ctx := testCtx(t)
	j, _ := newJobs(t, poll.JobsOptions{})
	g := newGate()
	job, err := j.Submit(ctx, g.work(nil, nil))
	require.NoError(t, err)
	waitFor(t, ctx, g.started)
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	got, err := j.Wait(wctx, job.ID)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, poll.Running, got.Status)
	close(g.release)
}

// TestJobsAcrossTwoNodes shares a store and a broker between two Jobs, as
// two servers would: either node answers for, waits on and cancels a job
// that runs on the other.
func TestJobsAcrossTwoNodes(t *testing.T) {
	ctx := testCtx(t)
	store := poll.NewMemoryStore(0)
	broker := pubsub.NewBroker()
	defer broker.Close()
	a, _ := newJobs(t, poll.JobsOptions{Store: store, Broker: broker})
	b, _ := newJobs(t, poll.JobsOptions{Store: store, Broker: broker})
	testTwoNodes(t, ctx, a, b)
}

func testTwoNodes(t *testing.T, ctx context.Context, a, b *poll.Jobs) {
	g := newGate()
	job, err := a.Submit(ctx, g.work("done", nil))
	require.NoError(t, err)
	waitFor(t, ctx, g.started)
	got, err := b.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Running, got.Status)

	waited := make(chan poll.Job, 1)
	go func() {
		j, _ := b.Wait(ctx, job.ID)
		waited <- j
	}()
	close(g.release)
	select {
	case j := <-waited:
		assert.Equal(t, poll.Succeeded, j.Status)
		assert.JSONEq(t, `"done"`, string(j.Result))
	case <-ctx.Done():
		t.Fatal("the other node's Wait did not return")
	}

	stopped := make(chan struct{})
	started := make(chan struct{})
	job, err = a.Submit(ctx, func(wctx context.Context, _ func(float64, string)) (any, error) {
		close(started)
		<-wctx.Done()
		close(stopped)
		return nil, wctx.Err()
	})
	require.NoError(t, err)
	waitFor(t, ctx, started)
	_, err = b.Cancel(ctx, job.ID)
	require.NoError(t, err)
	waitFor(t, ctx, stopped)
	got, err = a.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Canceled, got.Status)
}

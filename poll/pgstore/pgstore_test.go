package pgstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/poll/pgstore"
	"github.com/switchboard-go/switchboard/pubsub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newStore migrates a table of its own for t and drops it when t ends.
func newStore(t *testing.T) (*pgstore.Store, *pgxpool.Pool) {
	t.Helper()
	db, err := pgxpool.New(context.Background(), enginetest.PostgresURL(t))
	require.NoError(t, err)
	t.Cleanup(db.Close)
	table := "pgstore_test_" + strings.ToLower(rand.Text()[:12])
	s, err := pgstore.New(db, &pgstore.Options{Table: table})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	require.NoError(t, s.Migrate(context.Background()), "Migrate is idempotent")
	t.Cleanup(func() { _, _ = db.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	return s, db
}

var epoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestStoreRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	s, _ := newStore(t)
	job := poll.Job{ID: "A1", Status: poll.Pending, Created: epoch, Updated: epoch}
	require.NoError(t, s.Create(ctx, job))
	got, err := s.Get(ctx, "A1")
	require.NoError(t, err)
	assert.Equal(t, job, got)

	upd, err := s.Update(ctx, "A1", func(j *poll.Job) error {
		j.Status, j.Result, j.Progress, j.Message = poll.Succeeded, []byte(`{"a":1}`), 1, "done"
		j.Expires = epoch.Add(time.Hour)
		return nil
	})
	require.NoError(t, err)
	got, err = s.Get(ctx, "A1")
	require.NoError(t, err)
	assert.Equal(t, upd, got)
	assert.JSONEq(t, `{"a":1}`, string(got.Result))

	errSkip := errors.New("skip")
	_, err = s.Update(ctx, "A1", func(j *poll.Job) error { j.Status = poll.Failed; return errSkip })
	assert.ErrorIs(t, err, errSkip)
	got, _ = s.Get(ctx, "A1")
	assert.Equal(t, poll.Succeeded, got.Status, "an Update whose fn fails stores nothing")

	_, err = s.Get(ctx, "missing")
	assert.ErrorIs(t, err, poll.ErrNotFound)
	_, err = s.Update(ctx, "missing", func(*poll.Job) error { return nil })
	assert.ErrorIs(t, err, poll.ErrNotFound)

	n, err := s.DeleteExpired(ctx, epoch.Add(time.Hour-time.Second))
	require.NoError(t, err)
	assert.Zero(t, n)
	n, err = s.DeleteExpired(ctx, epoch.Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, err = s.Get(ctx, "A1")
	assert.ErrorIs(t, err, poll.ErrNotFound)
}

func TestNewRejectsBadTableNames(t *testing.T) {
	for _, name := range []string{"Jobs", "a;drop", "1abc", "a.b.c"} {
		_, err := pgstore.New(nil, &pgstore.Options{Table: name})
		assert.Error(t, err, "table %q", name)
	}
}

// TestJobsVisibleAcrossTwoNodes runs two Jobs on one PostgreSQL table (and
// one broker), as two servers would: a job submitted on one is seen,
// waited for and canceled from the other.
func TestJobsVisibleAcrossTwoNodes(t *testing.T) {
	ctx := testCtx(t)
	s, _ := newStore(t)
	broker := pubsub.NewBroker()
	defer broker.Close()
	clk := clock.NewFake(epoch)
	a := poll.NewJobs(&poll.JobsOptions{Store: s, Broker: broker, Clock: clk})
	defer a.Shutdown(context.Background())
	b := poll.NewJobs(&poll.JobsOptions{Store: s, Broker: broker, Clock: clk})
	defer b.Shutdown(context.Background())

	release := make(chan struct{})
	started := make(chan struct{})
	job, err := a.Submit(ctx, func(ctx context.Context, report func(float64, string)) (any, error) {
		report(0.25, "quarter")
		close(started)
		<-release
		return "ok", nil
	})
	require.NoError(t, err)
	<-started
	got, err := b.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Running, got.Status)
	assert.Equal(t, 0.25, got.Progress)
	assert.Equal(t, "quarter", got.Message)

	waited := make(chan poll.Job, 1)
	go func() {
		j, _ := b.Wait(ctx, job.ID)
		waited <- j
	}()
	close(release)
	select {
	case j := <-waited:
		assert.Equal(t, poll.Succeeded, j.Status)
		assert.JSONEq(t, `"ok"`, string(j.Result))
	case <-ctx.Done():
		t.Fatal("Wait on the other node did not return")
	}

	stopped := make(chan struct{})
	started2 := make(chan struct{})
	job, err = a.Submit(ctx, func(ctx context.Context, _ func(float64, string)) (any, error) {
		close(started2)
		<-ctx.Done()
		close(stopped)
		return nil, ctx.Err()
	})
	require.NoError(t, err)
	<-started2
	got, err = b.Cancel(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Canceled, got.Status)
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("the cancel did not reach the work on the other node")
	}
	got, err = a.Get(ctx, job.ID)
	require.NoError(t, err)
	assert.Equal(t, poll.Canceled, got.Status)
}

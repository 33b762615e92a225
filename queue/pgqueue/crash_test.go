package pgqueue_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
)

// The crash test's child process: the test binary re-executed with these
// variables set runs crashChild instead of the tests.
const (
	crashChildEnv = "PGQUEUE_CRASH_CHILD" // "<namespace> <queue>"
	crashDoneAt   = 60                    // messages the child finishes before it starts holding
)

// crashChild consumes from the real engine with a Worker of 10 handlers.
// It finishes crashDoneAt messages ("done <body>" once the handler has
// returned), then every handler holds the message it got ("holding
// <body>") until the parent kills the process.
func crashChild() int {
	ns, name, _ := strings.Cut(os.Getenv(crashChildEnv), " ")
	ctx := context.Background()
	b, err := pgqueue.Connect(ctx, os.Getenv("SWITCHBOARD_POSTGRES_URL"), pgqueue.Config{Namespace: ns})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	q, err := queue.New(b, name)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	out := make(chan string, 100)
	go func() {
		for line := range out {
			fmt.Println(line)
		}
	}()
	var done atomic.Int64
	w := queue.NewWorker(q, func(ctx context.Context, d queue.Delivery) error {
		if done.Load() >= crashDoneAt {
			out <- "holding " + string(d.Body)
			<-ctx.Done() // until SIGKILL: the lease is extended meanwhile
			return ctx.Err()
		}
		done.Add(1)
		out <- "done " + string(d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 10, Lease: time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_ = w.Run(ctx) // never returns: the parent kills the process
	return 0
}

// A consumer process is killed with SIGKILL while it holds a batch; a
// second consumer finishes. Every enqueued message is processed at least
// once, and none is lost.
func TestCrashWithARealProcess(t *testing.T) {
	ctx := testCtx(t)
	dbURL := postgresURL(t)
	db := newPool(t, dbURL)
	ns := migrate(t, db)
	b := open(t, db, pgqueue.Config{Namespace: ns})
	q := newQueue(t, b)
	const n = 200
	msgs := make([]queue.Message, n)
	for i := range msgs {
		msgs[i] = queue.Message{Body: []byte(strconv.Itoa(i))}
	}
	_, err := q.EnqueueBatch(ctx, msgs)
	require.NoError(t, err)

	exe, err := os.Executable()
	require.NoError(t, err)
	child := exec.Command(exe, "-test.run=^$")
	child.Env = append(os.Environ(), crashChildEnv+"="+ns+" "+q.Name())
	stdout, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	})

	processed := map[string]int{}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	holding := 0
	for holding < 10 {
		select {
		case line, ok := <-lines:
			require.True(t, ok, "the child ended before it held a batch")
			verb, body, _ := strings.Cut(line, " ")
			switch verb {
			case "done":
				processed[body]++
			case "holding":
				holding++
			default:
				t.Fatalf("child: %s", line)
			}
		case <-ctx.Done():
			t.Fatal("the child did not get to hold a batch")
		}
	}
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	killed = true
	for line := range lines { // what it wrote before it died
		if verb, body, _ := strings.Cut(line, " "); verb == "done" {
			processed[body]++
		}
	}
	err = child.Wait()
	require.Error(t, err, "killed")
	byChild := len(processed)
	require.GreaterOrEqual(t, byChild, crashDoneAt)

	// The second consumer takes over when the dead child's leases end.
	got := make(chan string, n)
	w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
		got <- string(d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 10, Lease: 5 * time.Second, Wait: queue.MaxWait, Logger: quiet()})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	for len(processed) < n {
		select {
		case body := <-got:
			processed[body]++
		case <-ctx.Done():
			t.Fatalf("%d of %d messages processed", len(processed), n)
		}
	}
	require.NoError(t, w.Shutdown(ctx))
	require.NoError(t, <-ran)
	for i := range n {
		assert.GreaterOrEqual(t, processed[strconv.Itoa(i)], 1, "message %d", i)
	}
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, 0, st.Depth+st.InFlight+st.Delayed, "nothing left behind")
	assert.Equal(t, uint64(n), st.Processed, "each message acked once")
	t.Logf("the child finished %d messages and held 10 when killed; the second consumer did %d", byChild, n-byChild)
}

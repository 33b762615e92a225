package redisqueue_test

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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// The crash test re-executes the test binary as a consumer: childEnv
// selects that mode (and names the namespace and queue), and TestMain
// runs runChild instead of the tests.
const (
	childEnv   = "REDISQUEUE_CRASH_CHILD" // "<namespace> <queue>"
	childLease = time.Second
	childDone  = 100 // messages the child finishes before it holds the rest
)

// runChild consumes from the real engine with a Worker. It prints "done
// <body>" when a handler has finished a message (before its ack), and,
// once childDone messages are done, holds every further message in its
// handler, printing "hold <body>", until it is killed.
func runChild() int {
	ns, name, _ := strings.Cut(os.Getenv(childEnv), " ")
	opt, err := redis.ParseURL(os.Getenv(enginetest.RedisEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	client := redis.NewClient(opt)
	b, err := redisqueue.New(client, redisqueue.Options{Namespace: ns})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	q, err := queue.New(b, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	done := 0
	out := bufio.NewWriter(os.Stdout)
	w := queue.NewWorker(q, func(ctx context.Context, d queue.Delivery) error {
		mu.Lock()
		if done >= childDone {
			fmt.Fprintf(out, "hold %s\n", d.Body)
			out.Flush()
			mu.Unlock()
			<-ctx.Done() // until SIGKILL
			return ctx.Err()
		}
		done++
		fmt.Fprintf(out, "done %s\n", d.Body)
		out.Flush()
		mu.Unlock()
		return nil
	}, queue.WorkerOptions{Concurrency: 8, Lease: childLease, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_ = w.Run(context.Background())
	return 1 // never reached: the parent kills the child
}

// A consumer process is killed with SIGKILL while it holds a batch of
// leased messages; a second consumer finishes the queue. Every enqueued
// message is processed at least once, and the ones the dead process held
// come back as second attempts once their leases pass.
func TestCrashedConsumerProcess(t *testing.T) {
	const total = 400
	ctx, ns, name := testCtx(t), namespace(t), "crash"
	client := newClient(t)
	b := newBackend(t, client, ns)
	q, err := queue.New(b, name)
	require.NoError(t, err)
	msgs := make([]queue.Message, total)
	for i := range msgs {
		msgs[i] = queue.Message{Body: []byte(strconv.Itoa(i))}
	}
	_, err = q.EnqueueBatch(ctx, msgs)
	require.NoError(t, err)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+ns+" "+name)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// Read the child's progress until it holds a few messages: then it is
	// in the middle of a batch, with leases it will never settle.
	processed := make(map[string]bool)
	held := make(map[string]bool)
	lines := bufio.NewScanner(stdout)
	for len(held) < 4 && lines.Scan() {
		verb, body, _ := strings.Cut(lines.Text(), " ")
		switch verb {
		case "done":
			processed[body] = true
		case "hold":
			held[body] = true
		}
	}
	require.Len(t, held, 4, "the child's output ended early: %v", lines.Err())
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	killed = true
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "signal: killed", ee.Error())
	for lines.Scan() { // what it wrote before it died
		if verb, body, _ := strings.Cut(lines.Text(), " "); verb == "done" {
			processed[body] = true
		}
	}
	assert.Len(t, processed, childDone, "messages the child finished")

	// The second consumer.
	got := make(chan queue.Delivery, total)
	w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
		got <- d
		return nil
	}, queue.WorkerOptions{Concurrency: 8, Lease: childLease, Logger: quiet()})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()
	for len(processed) < total {
		select {
		case d := <-got:
			if held[string(d.Body)] {
				assert.GreaterOrEqual(t, d.Attempt, 2, "a message the dead process held, %s", d.Body)
			}
			processed[string(d.Body)] = true
		case <-ctx.Done():
			t.Fatalf("only %d of %d messages processed", len(processed), total)
		}
	}
	require.NoError(t, w.Shutdown(ctx))
	require.NoError(t, <-ran)
	for i := range total {
		assert.True(t, processed[strconv.Itoa(i)], "message %d lost", i)
	}
	// What is left are second deliveries of messages the child finished
	// but had not acked when it died, and whose leases have not passed
	// yet: take them as they come back, until the queue is empty.
	for {
		st, err := q.Stats(ctx)
		require.NoError(t, err)
		if st.Depth+st.InFlight+st.Delayed == 0 {
			break
		}
		ds, err := q.Receive(ctx, queue.ReceiveOptions{Max: 100, Lease: time.Minute, Wait: 2 * childLease})
		require.NoError(t, err)
		for _, d := range ds {
			assert.True(t, processed[string(d.Body)], "a message left over is one processed already: %s", d.Body)
			require.NoError(t, q.Ack(ctx, d.Receipt))
		}
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

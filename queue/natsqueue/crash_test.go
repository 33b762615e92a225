package natsqueue_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
)

// The crash child: the test binary re-executed with these variables set.
const (
	childEnv   = "NATSQUEUE_CRASH_CHILD" // the namespace to consume from
	childURL   = "NATSQUEUE_CRASH_URL"
	childQueue = "crash"
	childSmall = 40 // messages the child finishes before it starts to hang
)

// runChild consumes from the engine with a Worker: it finishes the first
// childSmall messages ("done <body>" on stdout once handled), then holds
// every later one without finishing it ("held <body>"), as a process that
// dies mid-batch does, until the parent kills it with SIGKILL.
func runChild() int {
	nc, err := nats.Connect(os.Getenv(childURL))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b, err := natsqueue.New(context.Background(), nc, &natsqueue.Options{Namespace: os.Getenv(childEnv), MaxBytes: testMaxBytes})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	q, _ := queue.New(b, childQueue)
	var mu sync.Mutex
	n := 0
	hang := make(chan struct{}) // never closed: the process is killed
	w := queue.NewWorker(q, func(_ context.Context, d queue.Delivery) error {
		mu.Lock()
		n++
		finish := n <= childSmall
		if finish {
			fmt.Printf("done %s\n", d.Body)
		} else {
			fmt.Printf("held %s\n", d.Body)
		}
		mu.Unlock()
		if !finish {
			<-hang
		}
		return nil
	}, queue.WorkerOptions{Concurrency: 10, Lease: time.Second})
	_ = w.Run(context.Background())
	return 1
}

// A consumer process is killed with SIGKILL while it holds a batch of
// leased messages; a second consumer finishes the queue: every enqueued
// message is processed at least once.
func TestCrashedProcessLosesNothing(t *testing.T) {
	rawURL := enginetest.NATSURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	nc := connect(t, rawURL)
	ns := namespace(t, nc)
	b := open(t, nc, &natsqueue.Options{Namespace: ns})
	q, err := queue.New(b, childQueue)
	require.NoError(t, err)
	const total = 200
	msgs := make([]queue.Message, total)
	for i := range msgs {
		msgs[i] = queue.Message{Body: []byte(strconv.Itoa(i))}
	}
	_, err = q.EnqueueBatch(ctx, msgs)
	require.NoError(t, err)

	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+ns, childURL+"="+rawURL)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	done := make(map[string]bool)
	held := 0
	lines := bufio.NewScanner(out)
	for held < 10 && lines.Scan() {
		kind, body, _ := strings.Cut(lines.Text(), " ")
		switch kind {
		case "done":
			done[body] = true
		case "held":
			held++
		}
	}
	require.Equal(t, 10, held, "the child holds a full batch (all its handlers)")
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait()
	require.Len(t, done, childSmall)

	processed := make(chan string, total)
	runWorker(t, q, func(_ context.Context, d queue.Delivery) error {
		processed <- string(d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 10, Lease: time.Second})
	seen := make(map[string]bool)
	for body := range done {
		seen[body] = true // finished by the child (its ack may not have landed: then it comes again)
	}
	for len(seen) < total {
		select {
		case body := <-processed:
			seen[body] = true
		case <-ctx.Done():
			t.Fatalf("only %d of %d messages processed", len(seen), total)
		}
	}
}

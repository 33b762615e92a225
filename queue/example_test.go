package queue_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/queue"
)

func Example() {
	ctx := context.Background()
	backend := queue.NewMemory(queue.MemoryOptions{})
	defer backend.Close()
	jobs, _ := queue.New(backend, "jobs")

	jobs.Enqueue(ctx, queue.Message{Body: []byte("resize photo 1")})
	jobs.Enqueue(ctx, queue.Message{Body: []byte("resize photo 2")})

	ds, _ := jobs.Receive(ctx, queue.ReceiveOptions{Max: 10, Lease: time.Minute})
	for _, d := range ds {
		fmt.Printf("%s (attempt %d)\n", d.Body, d.Attempt)
		jobs.Ack(ctx, d.Receipt)
	}
	// Output:
	// resize photo 1 (attempt 1)
	// resize photo 2 (attempt 1)
}

// A worker runs a handler over a queue; Shutdown drains what is running.
func ExampleWorker() {
	ctx := context.Background()
	backend := queue.NewMemory(queue.MemoryOptions{})
	defer backend.Close()
	jobs, _ := queue.New(backend, "jobs")

	done := make(chan struct{})
	w := queue.NewWorker(jobs, func(ctx context.Context, d queue.Delivery) error {
		fmt.Printf("processing %s\n", d.Body)
		close(done)
		return nil
	}, queue.WorkerOptions{Concurrency: 4})
	go w.Run(ctx)

	jobs.Enqueue(ctx, queue.Message{Body: []byte("send welcome email")})
	<-done
	w.Shutdown(ctx)
	// Output:
	// processing send welcome email
}

type Welcome struct {
	To string `json:"to"`
}

// Typed puts Go values on a queue, JSON-encoded by default.
func ExampleTyped() {
	ctx := context.Background()
	backend := queue.NewMemory(queue.MemoryOptions{})
	defer backend.Close()
	q, _ := queue.New(backend, "emails")
	emails := queue.Typed[Welcome]{Queue: q}

	emails.Enqueue(ctx, Welcome{To: "ada@example.com"}, queue.Message{Priority: 1})

	handle := emails.Handler(func(ctx context.Context, e Welcome) error {
		fmt.Println("welcome", e.To)
		return nil
	})
	ds, _ := q.Receive(ctx, queue.ReceiveOptions{})
	if handle(ctx, ds[0]) == nil {
		q.Ack(ctx, ds[0].Receipt)
	}
	// Output:
	// welcome ada@example.com
}

// A receipt is valid only while its lease holds.
func ExampleErrStaleReceipt() {
	ctx := context.Background()
	backend := queue.NewMemory(queue.MemoryOptions{})
	defer backend.Close()
	jobs, _ := queue.New(backend, "jobs")

	jobs.Enqueue(ctx, queue.Message{Body: []byte("x")})
	ds, _ := jobs.Receive(ctx, queue.ReceiveOptions{})
	jobs.Ack(ctx, ds[0].Receipt)
	err := jobs.Ack(ctx, ds[0].Receipt)
	fmt.Println(errors.Is(err, queue.ErrStaleReceipt))
	// Output:
	// true
}

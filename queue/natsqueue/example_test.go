package natsqueue_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
)

// A producer and a worker on JetStream: the same code as on the memory
// backend, with one constructor swapped. (Not run by go test: it needs a
// server.)
func Example() {
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	backend, err := natsqueue.New(ctx, nc, &natsqueue.Options{Namespace: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()
	emails, err := queue.New(backend, "emails")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := emails.Enqueue(ctx, queue.Message{Body: []byte("welcome alice"), DedupKey: "signup-42"}); err != nil {
		log.Fatal(err)
	}
	w := queue.NewWorker(emails, func(ctx context.Context, d queue.Delivery) error {
		fmt.Printf("send %s (attempt %d)\n", d.Body, d.Attempt)
		return nil
	}, queue.WorkerOptions{Concurrency: 10, Lease: 30 * time.Second})
	go func() { _ = w.Run(ctx) }()
	defer w.Shutdown(ctx)
}

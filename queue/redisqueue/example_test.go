package redisqueue_test

import (
	"context"
	"fmt"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// Swap the memory backend for Redis: the Queue and the Worker are the
// same, and now the jobs survive a restart and are shared by every
// machine that runs a worker.
func Example() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close() // the backend never closes the caller's client

	var backend queue.Backend // was: queue.NewMemory(queue.MemoryOptions{})
	backend, err := redisqueue.New(client, redisqueue.Options{Namespace: "myapp"})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()

	emails, err := queue.New(backend, "emails")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := emails.Enqueue(ctx, queue.Message{Body: []byte("ada@example.com"), DedupKey: "welcome-ada"}); err != nil {
		log.Fatal(err)
	}
	w := queue.NewWorker(emails, func(ctx context.Context, d queue.Delivery) error {
		fmt.Println("sending to", string(d.Body))
		return nil
	}, queue.WorkerOptions{Concurrency: 10})
	if err := w.Run(ctx); err != nil { // until ctx ends or w.Shutdown
		log.Fatal(err)
	}
}

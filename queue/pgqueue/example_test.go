package pgqueue_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
)

// The first lines of a service that moves its jobs from the memory
// backend to PostgreSQL: migrate once, connect, and use the queue as
// before.
func Example() {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := pgqueue.Migrate(ctx, db, "jobs"); err != nil {
		log.Fatal(err)
	}
	backend, err := pgqueue.New(ctx, db, pgqueue.Config{Namespace: "jobs"})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()

	emails, _ := queue.New(backend, "emails")
	if _, err := emails.Enqueue(ctx, queue.Message{Body: []byte("welcome ada@example.com")}); err != nil {
		log.Fatal(err)
	}
	w := queue.NewWorker(emails, func(ctx context.Context, d queue.Delivery) error {
		fmt.Printf("sending %s\n", d.Body)
		return nil
	}, queue.WorkerOptions{Concurrency: 10})
	go w.Run(ctx)
	defer w.Shutdown(ctx)
}

// A job enqueued in the same transaction as the row it is about: both or
// neither.
func ExampleBackend_EnqueueTx() {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	backend, err := pgqueue.New(ctx, db, pgqueue.Config{Namespace: "jobs"})
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Close()

	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO users (email) VALUES ($1)", "ada@example.com"); err != nil {
			return err
		}
		_, err := backend.EnqueueTx(ctx, tx, "emails", []queue.Message{{Body: []byte("welcome ada@example.com")}})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

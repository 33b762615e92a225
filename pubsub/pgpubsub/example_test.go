package pgpubsub_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
)

// Each node migrates (idempotently), opens one broker, and uses it as any
// pubsub.Backend. Needs a database, so it is compiled but not run.
func Example() {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	schema := pgpubsub.Schema{Namespace: "app_events", MaxMessages: 50_000, MaxAge: time.Hour}
	if err := pgpubsub.Migrate(ctx, db, schema); err != nil {
		log.Fatal(err)
	}
	var broker pubsub.Backend
	broker, err = pgpubsub.New(ctx, db, pgpubsub.Config{Namespace: "app_events"})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	sub, err := broker.Subscribe(ctx, "orders.>")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	if _, err := broker.Publish(ctx, pubsub.Message{Topic: "orders.eu.42", Data: []byte("created")}); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Topic, string(m.Data))
}

// PublishTx publishes in the caller's transaction: the order row and its
// event exist together or not at all.
func ExampleBroker_PublishTx() {
	ctx := context.Background()
	db, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	broker, err := pgpubsub.New(ctx, db, pgpubsub.Config{Namespace: "app_events"})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, status) VALUES ($1, 'created')", 42); err != nil {
			return err
		}
		// Last in the transaction: other publishers wait until it commits.
		_, err := broker.PublishTx(ctx, tx, pubsub.Message{Topic: "orders.eu.42", Data: []byte("created")})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

package natspubsub_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/natspubsub"
)

// Each node connects to NATS and makes its broker; the rest of the
// application sees only a pubsub.Backend.
func Example() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	broker, err := natspubsub.New(ctx, nc, &natspubsub.Options{
		Namespace: "myapp.events",
		MaxMsgs:   100_000,
		MaxAge:    time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	var backend pubsub.Backend = broker // what sse, push and poll take
	sub, err := backend.Subscribe(ctx, "orders.*.created")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	if _, err := backend.Publish(ctx, pubsub.Message{Topic: "orders.eu.created", Data: []byte("order 1")}); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s\n", m.Topic, m.Data)
}

// A client that saw a message on one node resumes on any node after its
// cursor: the stream replays what it missed, then it continues live.
func ExampleBroker_Subscribe_resume() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	broker, err := natspubsub.New(ctx, nc, &natspubsub.Options{Namespace: "myapp.events"})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	var last pubsub.Cursor // from the client: an SSE Last-Event-ID, a long-poll cursor
	sub, err := broker.Subscribe(ctx, "chat.>", pubsub.After(last))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			log.Print(err) // ErrGap: history no longer reaches the cursor; Next continues
			continue
		}
		fmt.Printf("%s %s\n", m.Cursor, m.Data)
	}
}

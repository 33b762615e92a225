package redispubsub_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/redispubsub"
)

// Swap the memory broker for Redis: everything built on a pubsub.Backend
// (SSE, push, long polling) is unchanged, and now works across nodes.
func Example() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close() // the broker never closes the caller's client

	var broker pubsub.Backend // was: pubsub.NewBroker(pubsub.History(10_000, time.Hour))
	broker, err := redispubsub.New(ctx, client,
		redispubsub.Namespace("myapp"),
		redispubsub.Retention(100_000, 24*time.Hour))
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

// A client that reconnects, to this node or another, resumes after the
// cursor of the last message it saw (an SSE Last-Event-ID, a long-poll
// cursor). If Redis no longer holds what followed it, Next says so with
// pubsub.ErrGap first.
func ExampleBroker_Subscribe_resume() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	broker, err := redispubsub.New(ctx, client, redispubsub.Namespace("myapp"))
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	var lastSeen pubsub.Cursor = "k3v9q2m1xa.1717171717171-0" // from the client
	sub, err := broker.Subscribe(ctx, "orders.>", pubsub.After(lastSeen))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for {
		m, err := sub.Next(ctx)
		if errors.Is(err, pubsub.ErrGap) {
			fmt.Println("some messages are lost; resynchronise the client:", err)
			continue
		}
		if err != nil {
			return
		}
		fmt.Println(m.Cursor, string(m.Data))
	}
}

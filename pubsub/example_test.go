package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/switchboard-go/switchboard/pubsub"
)

func Example() {
	ctx := context.Background()
	broker := pubsub.NewBroker()
	defer broker.Close()

	sub, _ := broker.Subscribe(ctx, "orders.*.created")
	defer sub.Close()

	broker.Publish(ctx, pubsub.Message{Topic: "orders.eu.created", Data: []byte("order 1")})
	broker.Publish(ctx, pubsub.Message{Topic: "orders.eu.paid", Data: []byte("order 1")})
	broker.Publish(ctx, pubsub.Message{Topic: "orders.us.created", Data: []byte("order 2")})

	for range 2 {
		m, _ := sub.Next(ctx)
		fmt.Printf("%s: %s\n", m.Topic, m.Data)
	}
	// Output:
	// orders.eu.created: order 1
	// orders.us.created: order 2
}

// A subscriber that went away resumes after the cursor of the last message
// it saw: history replays what it missed, then it continues live.
func ExampleAfter() {
	ctx := context.Background()
	broker := pubsub.NewBroker(pubsub.History(1000, 0))
	defer broker.Close()

	last, _ := broker.Publish(ctx, pubsub.Message{Topic: "chat.room1", Data: []byte("seen")})
	broker.Publish(ctx, pubsub.Message{Topic: "chat.room1", Data: []byte("missed 1")})
	broker.Publish(ctx, pubsub.Message{Topic: "chat.room1", Data: []byte("missed 2")})

	sub, _ := broker.Subscribe(ctx, "chat.>", pubsub.After(last))
	defer sub.Close()
	broker.Publish(ctx, pubsub.Message{Topic: "chat.room1", Data: []byte("live")})

	for range 3 {
		m, _ := sub.Next(ctx)
		fmt.Println(string(m.Data))
	}
	// Output:
	// missed 1
	// missed 2
	// live
}

// When history no longer reaches a cursor, the subscription says so once
// with ErrGap, then continues from the oldest message still retained.
func ExampleErrGap() {
	ctx := context.Background()
	broker := pubsub.NewBroker(pubsub.History(2, 0))
	defer broker.Close()

	old, _ := broker.Publish(ctx, pubsub.Message{Topic: "feed", Data: []byte("1")})
	for _, d := range []string{"2", "3", "4"} {
		broker.Publish(ctx, pubsub.Message{Topic: "feed", Data: []byte(d)})
	}

	sub, _ := broker.Subscribe(ctx, "feed", pubsub.After(old))
	defer sub.Close()
	if _, err := sub.Next(ctx); errors.Is(err, pubsub.ErrGap) {
		fmt.Println("gap: reload state")
	}
	for range 2 {
		m, _ := sub.Next(ctx)
		fmt.Println(string(m.Data))
	}
	// Output:
	// gap: reload state
	// 3
	// 4
}

func ExampleNewPublishHandler() {
	broker := pubsub.NewBroker()
	defer broker.Close()

	mux := http.NewServeMux()
	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(broker,
		func(r *http.Request) (string, error) {
			if r.Header.Get("Authorization") == "" {
				return "", pubsub.ErrUnauthorized
			}
			return r.PathValue("topic"), nil
		}))
	_ = http.ListenAndServe // serve mux with your http.Server
}

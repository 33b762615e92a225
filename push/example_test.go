package push_test

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

// A hub on a broker, a client subscribed to a pattern, a publish. In a
// service the client is a browser or push.Connect(ctx, "ws://host/ws"),
// and the hub is mounted with mux.Handle("GET /ws", push.NewHandler(hub)).
func Example() {
	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()
	hub, err := push.NewHub(broker)
	if err != nil {
		panic(err)
	}
	defer hub.Shutdown(context.Background())

	ctx := context.Background()
	inMemory := func(context.Context) (push.Conn, error) { return hub.Pipe("ann"), nil }
	client, err := push.Connect(ctx, "", push.WithDialer(inMemory))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	if err := client.Subscribe(ctx, "chat.*", ""); err != nil {
		panic(err)
	}

	hub.Publish(ctx, "chat.lobby", []byte(`{"text":"hello"}`))
	m, _ := client.Next(ctx)
	fmt.Println(m.Topic, string(m.Data))
	// Output: chat.lobby {"text":"hello"}
}

// Clients send to the server's handler; with Request they wait for its
// reply.
func ExampleOnMessage() {
	broker := pubsub.NewBroker()
	defer broker.Close()
	hub, _ := push.NewHub(broker, push.OnMessage(func(ctx context.Context, r *push.Request) ([]byte, error) {
		return fmt.Appendf(nil, "%q from %s", r.Data, r.User), nil
	}))
	defer hub.Shutdown(context.Background())

	ctx := context.Background()
	client, _ := push.Connect(ctx, "", push.WithDialer(func(context.Context) (push.Conn, error) {
		return hub.Pipe("ann"), nil
	}))
	defer client.Close()
	reply, err := client.Request(ctx, []byte("hi"))
	fmt.Println(string(reply), err)
	// Output: "hi" from ann <nil>
}

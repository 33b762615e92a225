// Command push serves a WebSocket hub and a small chat page.
//
//	go run ./examples/push -addr 127.0.0.1:8080
//
// Open http://127.0.0.1:8080/ in two windows: what one says, the other
// sees. Publish into the room from outside with
//
//	curl -d 'hello' http://127.0.0.1:8080/publish/chat.lobby
//
// The page speaks the push wire protocol (see the package documentation of
// push) at GET /ws: it subscribes to chat.lobby, sends what you type to the
// server, which publishes it to the room, and, when the connection drops,
// reconnects with backoff and subscribes again after the cursor of the
// last message it got, so it misses nothing the broker retains.
//
// On SIGINT or SIGTERM the hub closes every connection with "going away"
// (push.Hub.Shutdown), then the server shuts down.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
)

//go:embed index.html
var page []byte

// Room is the chat's topic.
const Room = "chat.lobby"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	listening := func(a net.Addr) {
		fmt.Fprintf(os.Stdout, "open http://%s/  (WebSocket at /ws, publish with POST /publish/{topic})\n", a)
	}
	if err := run(ctx, *addr, listening); err != nil {
		log.Fatal(err)
	}
}

// newHub returns the chat's hub: what a client sends is published to the
// room, and the reply carries its cursor.
func newHub(broker pubsub.Backend) (*push.Hub, error) {
	var hub *push.Hub
	say := func(ctx context.Context, r *push.Request) ([]byte, error) {
		c, err := hub.Publish(ctx, Room, r.Data)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]string{"cursor": string(c)})
	}
	var err error
	hub, err = push.NewHub(broker, push.OnMessage(say))
	return hub, err
}

// routes mounts the page, the WebSocket (ws) and the publish endpoint.
func routes(broker pubsub.Publisher, ws http.Handler) *http.ServeMux {
	topic := func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }
	mux := http.NewServeMux()
	mux.Handle("GET /ws", ws)
	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(broker, topic, pubsub.MaxBodySize(64<<10)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page)
	})
	return mux
}

// user is the demo's auth hook: the name in the query, if any. A real
// service reads a session cookie or a token here.
func user(r *http.Request) (string, error) { return r.URL.Query().Get("name"), nil }

// run serves until ctx ends, then shuts down gracefully. It calls
// listening, if not nil, with the address it listens on.
func run(ctx context.Context, addr string, listening func(net.Addr)) error {
	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()
	hub, err := newHub(broker)
	if err != nil {
		return err
	}
	mux := routes(broker, push.NewHandler(hub, push.Authenticate(user)))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = hub.Shutdown(context.Background())
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if listening != nil {
		listening(ln.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		_ = hub.Shutdown(context.Background())
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Connections first: Server.Shutdown does not close hijacked ones.
	err = hub.Shutdown(shutdownCtx)
	if e := srv.Shutdown(shutdownCtx); err == nil {
		err = e
	}
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Command sse streams pubsub topics to browsers as server-sent events.
//
//	go run ./examples/sse -addr 127.0.0.1:8080
//
// Open http://127.0.0.1:8080/ for a live feed of a topic (wildcards such as
// "demo.>" work) with a field that publishes into it, or use curl:
//
//	curl -N http://127.0.0.1:8080/events/demo.%3E
//	curl -d 'hello' http://127.0.0.1:8080/publish/demo.greetings
//
// Every event's id is its pubsub cursor: a browser that loses the stream
// reconnects with Last-Event-ID and gets what it missed from the broker's
// history. When history no longer reaches that far (or the id is not a
// cursor of this broker, say after a restart) the stream sends a "gap"
// event first, which the page shows.
//
// On SIGINT or SIGTERM the server ends the open streams (the sse Handler's
// Shutdown: http.Server.Shutdown does not end them by itself), then shuts
// down.
package main

import (
	"context"
	_ "embed"
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
	"github.com/switchboard-go/switchboard/sse"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	listening := func(a net.Addr) {
		fmt.Fprintf(os.Stdout, "open http://%s/  (events at /events/{topic}, publish with POST /publish/{topic})\n", a)
	}
	if err := run(ctx, *addr, listening); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx ends, then shuts down gracefully. It calls
// listening, if not nil, with the address it listens on.
func run(ctx context.Context, addr string, listening func(net.Addr)) error {
	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()

	topic := func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }
	events := sse.NewHandler(broker, topic, sse.Retry(time.Second))

	mux := http.NewServeMux()
	mux.Handle("GET /events/{topic}", events)
	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(broker, topic, pubsub.MaxBodySize(64<<10)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page)
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
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
	case err := <-serveErr:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Streams first: Server.Shutdown waits for active connections, and an
	// open stream never becomes idle by itself.
	err = events.Shutdown(shutdownCtx)
	if e := srv.Shutdown(shutdownCtx); err == nil {
		err = e
	}
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

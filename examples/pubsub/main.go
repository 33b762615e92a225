// Command pubsub is the smallest useful switchboard service: it publishes
// HTTP request bodies to topics and prints what a wildcard subscriber
// receives.
//
//	go run ./examples/pubsub -addr 127.0.0.1:8080
//	curl -d 'hello' http://127.0.0.1:8080/publish/orders.eu.created
//
// With -demo it also publishes a few messages to itself over HTTP, prints
// them, and exits: a self-check that needs no second terminal.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/pubsub"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	pattern := flag.String("pattern", ">", "subject pattern the printing subscriber listens to")
	demo := flag.Bool("demo", false, "publish a few messages to this server, print them and exit")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *pattern, *demo, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, addr, pattern string, demo bool, out io.Writer) error {
	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()

	mux := http.NewServeMux()
	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(broker,
		func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(out, "publishing at http://%s/publish/{topic}; printing %q\n", ln.Addr(), pattern)

	sub, err := broker.Subscribe(ctx, pattern)
	if err != nil {
		return err
	}
	defer sub.Close()
	printed := make(chan struct{}, 16)
	printDone := make(chan struct{})
	go func() {
		defer close(printDone)
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			fmt.Fprintf(out, "%s  %-24s %s\n", m.Cursor, m.Topic, m.Data)
			select {
			case printed <- struct{}{}:
			default:
			}
		}
	}()

	if demo {
		for _, p := range []struct{ topic, body string }{
			{"orders.eu.created", "order 1"},
			{"orders.us.created", "order 2"},
			{"orders.eu.paid", "order 1"},
		} {
			resp, err := http.Post("http://"+ln.Addr().String()+"/publish/"+p.topic, "text/plain", strings.NewReader(p.body))
			if err != nil {
				return err
			}
			resp.Body.Close()
			<-printed
		}
	} else {
		select {
		case <-ctx.Done():
		case err := <-serveErr:
			return err
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	sub.Close()
	<-printDone
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Command poll shows both polling patterns on one server.
//
//	go run ./examples/poll -addr 127.0.0.1:8080
//
// Open http://127.0.0.1:8080/ for a page that starts a job and follows its
// progress (short polling, honouring Retry-After) and long-polls a topic
// with a field that publishes into it. Or use curl:
//
//	curl -i -X POST 'http://127.0.0.1:8080/jobs?seconds=3'     # 202, Location
//	curl -i 'http://127.0.0.1:8080/jobs/{id}?wait=30s'          # held until done: 303
//	curl 'http://127.0.0.1:8080/updates/demo.%3E?wait=30s'      # held until a publish
//	curl -d hello http://127.0.0.1:8080/publish/demo.greetings
//
// On SIGINT or SIGTERM it answers the held requests, stops the jobs and
// shuts down.
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
	"strconv"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	listening := func(a net.Addr) { fmt.Printf("open http://%s/\n", a) }
	if err := run(ctx, *addr, time.Second, listening); err != nil {
		log.Fatal(err)
	}
}

// demoJob counts to n steps of step each, reporting progress.
func demoJob(n int, step time.Duration) poll.Work {
	return func(ctx context.Context, report func(float64, string)) (any, error) {
		t := time.NewTicker(step)
		defer t.Stop()
		for i := 1; i <= n; i++ {
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			report(float64(i)/float64(n), fmt.Sprintf("step %d of %d", i, n))
		}
		return map[string]any{"steps": n, "message": "all done"}, nil
	}
}

// run serves until ctx ends, then shuts down gracefully. A demo job takes
// ?seconds= steps (default 5, at most 60) of step each. listening, if not
// nil, gets the address.
func run(ctx context.Context, addr string, step time.Duration, listening func(net.Addr)) error {
	broker := pubsub.NewBroker(pubsub.History(1000, time.Hour))
	defer broker.Close()
	jobs := poll.NewJobs(&poll.JobsOptions{Broker: broker, Limit: 4, TTL: 10 * time.Minute})

	start := func(r *http.Request) (poll.Work, error) {
		n := 5
		if s := r.URL.Query().Get("seconds"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 || v > 60 {
				return nil, errors.New("seconds must be a whole number from 1 to 60")
			}
			n = v
		}
		return demoJob(n, step), nil
	}
	jh := poll.NewJobsHandler(jobs, start, nil)
	topic := func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }
	updates := poll.NewLongPoll(broker, topic, nil)

	mux := http.NewServeMux()
	mux.Handle("/jobs", jh)
	mux.Handle("/jobs/", jh)
	mux.Handle("GET /updates/{topic}", updates)
	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(broker, topic, pubsub.MaxBodySize(64<<10)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
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
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(updates.Shutdown(sctx), jh.Shutdown(sctx), srv.Shutdown(sctx), jobs.Shutdown(sctx))
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return err
}

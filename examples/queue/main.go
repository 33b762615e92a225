// Command queue mounts the HTTP adapter for the queue "jobs" on an
// in-memory backend and runs a worker pool on it that logs what it
// processes.
//
//	go run ./examples/queue -addr 127.0.0.1:8080
//	curl -d 'resize photo 42' http://127.0.0.1:8080/queues/jobs/messages
//	curl http://127.0.0.1:8080/queues/jobs
//
// A body containing "fail" fails every attempt and ends in the dead-letter
// queue (GET /queues/jobs/dead) after three attempts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/queue"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	workers := flag.Int("workers", 4, "handlers that run at once")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *workers, os.Stdout, nil); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx ends. When ready is not nil it receives the
// listening address once the server and the workers are up.
func run(ctx context.Context, addr string, workers int, out io.Writer, ready chan<- string) error {
	backend := queue.NewMemory(queue.MemoryOptions{})
	defer backend.Close()
	jobs, err := queue.New(backend, "jobs")
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/queues/", queue.NewHandler(queue.HandlerOptions{Queues: []*queue.Queue{jobs}}))

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	w := queue.NewWorker(jobs, func(ctx context.Context, d queue.Delivery) error {
		if strings.Contains(string(d.Body), "fail") {
			fmt.Fprintf(out, "failed    %s attempt %d: %s\n", d.ID, d.Attempt, d.Body)
			return queue.RetryAfter(100*time.Millisecond, errors.New("asked to fail"))
		}
		fmt.Fprintf(out, "processed %s attempt %d: %s\n", d.ID, d.Attempt, d.Body)
		return nil
	}, queue.WorkerOptions{
		Concurrency: workers,
		MaxAttempts: 3,
		Logger:      slog.New(slog.NewTextHandler(out, nil)),
	})
	ran := make(chan error, 1)
	go func() { ran <- w.Run(context.Background()) }()

	fmt.Fprintf(out, "queue jobs at http://%s/queues/jobs (POST /messages to enqueue)\n", ln.Addr())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutdownCtx); err == nil {
		err = serr
	}
	if werr := w.Shutdown(shutdownCtx); err == nil {
		err = werr
	}
	if rerr := <-ran; err == nil {
		err = rerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

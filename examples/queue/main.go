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
//
// On an engine instead of memory (the queue then survives the process, and
// several processes share it):
//
//	go run ./examples/queue -postgres 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	go run ./examples/queue -redis redis://127.0.0.1:6379/0
//	go run ./examples/queue -nats nats://127.0.0.1:4222
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// config is what the flags say.
type config struct {
	addr      string
	workers   int
	postgres  string // at most one of postgres, redis, nats
	redis     string
	nats      string
	namespace string
}

// openBackend returns the backend the config names, and what closes it.
func openBackend(ctx context.Context, cfg config) (queue.Backend, func(), error) {
	switch {
	case cfg.postgres != "":
		pool, err := pgxpool.New(ctx, cfg.postgres)
		if err != nil {
			return nil, nil, err
		}
		if err := pgqueue.Migrate(ctx, pool, cfg.namespace); err != nil {
			pool.Close()
			return nil, nil, err
		}
		b, err := pgqueue.New(ctx, pool, pgqueue.Config{Namespace: cfg.namespace})
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return b, func() { b.Close(); pool.Close() }, nil
	case cfg.redis != "":
		opts, err := redis.ParseURL(cfg.redis)
		if err != nil {
			return nil, nil, err
		}
		client := redis.NewClient(opts)
		b, err := redisqueue.New(client, redisqueue.Options{Namespace: cfg.namespace})
		if err != nil {
			client.Close()
			return nil, nil, err
		}
		return b, func() { b.Close(); client.Close() }, nil
	case cfg.nats != "":
		nc, err := nats.Connect(cfg.nats)
		if err != nil {
			return nil, nil, err
		}
		b, err := natsqueue.New(ctx, nc, &natsqueue.Options{Namespace: cfg.namespace})
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return b, func() { b.Close(); nc.Close() }, nil
	}
	b := queue.NewMemory(queue.MemoryOptions{})
	return b, func() { b.Close() }, nil
}

func main() {
	var cfg config
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen address")
	flag.IntVar(&cfg.workers, "workers", 4, "handlers that run at once")
	flag.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL URL: keep the queue there (pgqueue)")
	flag.StringVar(&cfg.redis, "redis", "", "Redis URL: keep the queue there (redisqueue)")
	flag.StringVar(&cfg.nats, "nats", "", "NATS URL: keep the queue in JetStream (natsqueue)")
	flag.StringVar(&cfg.namespace, "namespace", "example_queue", "engine namespace (schema, key prefix or stream name)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, nil); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx ends. When ready is not nil it receives the
// listening address once the server and the workers are up.
func run(ctx context.Context, cfg config, out io.Writer, ready chan<- string) error {
	engines := 0
	for _, u := range []string{cfg.postgres, cfg.redis, cfg.nats} {
		if u != "" {
			engines++
		}
	}
	if engines > 1 {
		return errors.New("choose at most one of -postgres, -redis and -nats")
	}
	backend, closeBackend, err := openBackend(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeBackend()
	jobs, err := queue.New(backend, "jobs")
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/queues/", queue.NewHandler(queue.HandlerOptions{Queues: []*queue.Queue{jobs}}))

	ln, err := net.Listen("tcp", cfg.addr)
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
		Concurrency: cfg.workers,
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

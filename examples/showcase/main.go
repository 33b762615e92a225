// Command showcase is all seven patterns of switchboard in one service and
// one page: the README's first command.
//
//	go run ./examples/showcase
//
// Then open http://127.0.0.1:8080/. One http.Server and one ServeMux
// mount each package's own handler, and a panel of the page drives each:
//
//	POST /api/bookings          request-response: a typed API (request)
//	GET  /ws?name=ann           push: a chat over WebSocket with presence (push)
//	GET  /events                server-sent events: the activity feed (sse)
//	POST /jobs?steps=20         short polling: a slow job (poll.JobsHandler)
//	GET  /updates?cursor=       long polling: the same feed (poll.LongPoll)
//	/queues/work/...            message queue: the HTTP adapter (queue)
//	POST /publish/{subject}     publish-subscribe (pubsub)
//
// Everything that happens in a panel is published on the broker under
// "activity.<panel>", which the feed streams (SSE) and long-polls.
//
// Memory is the default. -postgres URL, -redis URL or -nats URL put the
// pubsub broker on that engine, and two showcases on two ports that share
// it see each other's chat, feed and jobs:
//
//	go run ./examples/showcase -redis redis://127.0.0.1:6379/0 -addr 127.0.0.1:8080
//	go run ./examples/showcase -redis redis://127.0.0.1:6379/0 -addr 127.0.0.1:8081
//
// The work queue moves to the engine too (queue/pgqueue, redisqueue,
// natsqueue), so both nodes' workers share it. With PostgreSQL the jobs
// live in the engine as well (poll/pgstore); with Redis or NATS they stay
// in each node's memory while their finish and cancel notifications travel
// on the engine, as the page says.
//
// On SIGINT or SIGTERM the showcase shuts down gracefully: event streams,
// WebSockets and held long polls are told to go away (clients reconnect
// and resume by cursor), the queue worker drains what it holds, jobs stop,
// then the HTTP server closes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/internal/ids"
)

// config is what the flags set.
type config struct {
	addr      string
	postgres  string // engine URLs: at most one is set
	redis     string
	nats      string
	namespace string // the engine namespace (schema, key prefix, subject prefix)
	node      string // this node's name, shown on the page and in the feed

	jobStep   time.Duration // one step of a demo job
	workDelay time.Duration // the work the queue consumer does per message
	sseRetry  time.Duration // the reconnection delay EventSource is told
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "listen address")
	flag.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL URL: pubsub, the queue and jobs on PostgreSQL")
	flag.StringVar(&cfg.redis, "redis", "", "Redis URL: pubsub and the queue on Redis")
	flag.StringVar(&cfg.nats, "nats", "", "NATS URL: pubsub and the queue on NATS JetStream")
	flag.StringVar(&cfg.namespace, "namespace", "showcase", "namespace on the engine; showcases that share one see each other")
	flag.StringVar(&cfg.node, "node", "", "this node's name (default: a short random one)")
	flag.DurationVar(&cfg.jobStep, "job-step", 500*time.Millisecond, "duration of one step of a demo job")
	flag.DurationVar(&cfg.workDelay, "work", 100*time.Millisecond, "work per queue message")
	flag.Parse()
	cfg.sseRetry = time.Second

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	listening := func(a net.Addr, engine string) {
		fmt.Printf("showcase on %s: open http://%s/\n", engine, a)
	}
	if err := run(ctx, cfg, listening); err != nil {
		log.Fatal(err)
	}
}

// run serves the showcase until ctx ends, then shuts down gracefully.
// listening, if not nil, gets the address and the engine's name.
func run(ctx context.Context, cfg config, listening func(net.Addr, string)) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	eng, err := openEngine(openCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer eng.close()

	srv, err := newServer(cfg, eng, slog.Default())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return errors.Join(err, srv.shutdown(context.Background()))
	}
	srv.start(ln)
	if listening != nil {
		listening(ln.Addr(), eng.name)
	}
	select {
	case <-ctx.Done():
	case err = <-srv.done:
		srv.done = nil // Serve already ended
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(err, srv.shutdown(shutdownCtx))
}

// withDefaults checks cfg and fills what is unset.
func (c config) withDefaults() (config, error) {
	n := 0
	for _, u := range []string{c.postgres, c.redis, c.nats} {
		if u != "" {
			n++
		}
	}
	if n > 1 {
		return c, errors.New("choose one engine: -postgres, -redis or -nats")
	}
	if c.namespace == "" {
		c.namespace = "showcase"
	}
	if c.node == "" {
		id := ids.New()
		c.node = "node-" + id[len(id)-4:]
	}
	if c.jobStep <= 0 {
		c.jobStep = 500 * time.Millisecond
	}
	if c.sseRetry <= 0 {
		c.sseRetry = time.Second
	}
	return c, nil
}

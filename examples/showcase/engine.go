package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/poll/pgstore"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/natspubsub"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
	"github.com/switchboard-go/switchboard/pubsub/redispubsub"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/natsqueue"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
	"github.com/switchboard-go/switchboard/queue/redisqueue"
)

// engine is what outlives one HTTP server: the pubsub broker, the queue
// backend and the job store. On PostgreSQL all three live in the engine;
// on Redis and NATS the broker and the queue do, and jobs stay in each
// node's memory (notes says so on the page). Closing it loses what the memory
// implementations hold; what an engine holds stays in the engine.
type engine struct {
	name    string         // "memory", "postgres", "redis" or "nats"
	broker  pubsub.Backend // every server-to-client pattern subscribes here
	queues  queue.Backend  // the queue panel's queue
	store   poll.Store     // the jobs panel's jobs
	notes   []string       // what does not live on the engine, for the page
	closers []func() error // run last first by close
}

// Memory limits of the showcase: everything is bounded, and these bounds
// say where.
const (
	historyCount = 10_000    // retained pubsub messages (memory broker)
	historyAge   = time.Hour // retained pubsub age (memory broker)
	maxQueued    = 100_000   // messages in the work queue (memory backend)
	maxDead      = 10_000    // dead letters kept (memory backend)
	maxJobs      = 10_000    // jobs the memory store keeps
)

// openEngine connects to the engine cfg names (memory when it names none)
// in cfg.namespace.
func openEngine(ctx context.Context, cfg config) (*engine, error) {
	e := &engine{}
	var err error
	switch {
	case cfg.postgres != "":
		err = e.openPostgres(ctx, cfg)
	case cfg.redis != "":
		err = e.openRedis(ctx, cfg)
	case cfg.nats != "":
		err = e.openNATS(ctx, cfg)
	default:
		e.name = "memory"
		e.broker = pubsub.NewBroker(pubsub.History(historyCount, historyAge))
		e.closers = append(e.closers, e.broker.Close)
	}
	if err != nil {
		_ = e.close()
		return nil, err
	}
	if e.queues == nil {
		m := queue.NewMemory(queue.MemoryOptions{MaxDepth: maxQueued, MaxDead: maxDead})
		e.queues = m
		e.closers = append(e.closers, m.Close)
	}
	if e.store == nil {
		e.store = poll.NewMemoryStore(maxJobs)
		if e.name != "memory" {
			e.notes = append(e.notes, "jobs are kept in this node's memory (only PostgreSQL has a job store); their notifications travel on "+e.name)
		}
	}
	return e, nil
}

func (e *engine) openPostgres(ctx context.Context, cfg config) error {
	e.name = "postgres"
	db, err := pgxpool.New(ctx, cfg.postgres)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	e.closers = append(e.closers, func() error { db.Close(); return nil })
	ns := pgNamespace(cfg.namespace)
	if err := pgpubsub.Migrate(ctx, db, pgpubsub.Schema{Namespace: ns}); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	b, err := pgpubsub.New(ctx, db, pgpubsub.Config{Namespace: ns})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	e.broker = b
	e.closers = append(e.closers, b.Close)
	store, err := pgstore.New(db, &pgstore.Options{Table: ns + ".jobs"})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	e.store = store
	qns := queueNamespace(ns)
	if err := pgqueue.Migrate(ctx, db, qns); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	q, err := pgqueue.New(ctx, db, pgqueue.Config{Namespace: qns})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	e.queues = q
	e.closers = append(e.closers, q.Close)
	return nil
}

func (e *engine) openRedis(ctx context.Context, cfg config) error {
	e.name = "redis"
	opt, err := redis.ParseURL(cfg.redis)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	client := redis.NewClient(opt)
	e.closers = append(e.closers, client.Close)
	b, err := redispubsub.New(ctx, client, redispubsub.Namespace(cfg.namespace))
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	e.broker = b
	e.closers = append(e.closers, b.Close)
	q, err := redisqueue.New(client, redisqueue.Options{Namespace: cfg.namespace, MaxDepth: maxQueued, MaxDead: maxDead})
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	e.queues = q
	e.closers = append(e.closers, q.Close)
	return nil
}

func (e *engine) openNATS(ctx context.Context, cfg config) error {
	e.name = "nats"
	nc, err := nats.Connect(cfg.nats, nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	e.closers = append(e.closers, func() error { nc.Close(); return nil })
	b, err := natspubsub.New(ctx, nc, &natspubsub.Options{Namespace: cfg.namespace})
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	e.broker = b
	e.closers = append(e.closers, b.Close)
	q, err := natsqueue.New(ctx, nc, &natsqueue.Options{Namespace: queueNamespace(cfg.namespace), MaxDead: maxDead})
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	e.queues = q
	e.closers = append(e.closers, q.Close)
	return nil
}

// pgNamespace turns a namespace into a PostgreSQL schema name.
func pgNamespace(ns string) string {
	b := []byte(ns)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case c >= 'A' && c <= 'Z':
			b[i] = c + 'a' - 'A'
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// queueNamespace is where the queue lives on PostgreSQL and NATS: beside
// the broker's namespace, not in it (a schema of its own; subjects outside
// the broker's stream).
func queueNamespace(ns string) string { return pgNamespace(ns) + "_queue" }

// close releases everything, last opened first.
func (e *engine) close() error {
	var err error
	for i := len(e.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, e.closers[i]())
	}
	e.closers = nil
	return err
}

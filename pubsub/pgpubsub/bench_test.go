package pgpubsub_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
)

const benchSize = 256

// stamped returns a 256-byte message whose first 8 bytes are the time now.
func stamped() []byte {
	data := make([]byte, benchSize)
	binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
	return data
}

func latency(data []byte) time.Duration {
	return time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(data)))
}

func report(b *testing.B, elapsed time.Duration, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// BenchmarkPublishReceive: one publisher, 256-byte messages, over loopback,
// until every subscriber has every message. Beside each count of local
// subscribers, the bare client: INSERT + NOTIFY in one statement, read by
// plain LISTEN connections, one per subscriber up to 10 (100 connections
// would exhaust the shared test server's max_connections).
func BenchmarkPublishReceive(b *testing.B) {
	dbURL := postgresURL(b)
	for _, subs := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subs=%d/pgpubsub", subs), func(b *testing.B) { benchBroker(b, dbURL, subs) })
		listeners := min(subs, 10)
		b.Run(fmt.Sprintf("subs=%d/bare-listeners=%d", subs, listeners), func(b *testing.B) { benchBare(b, dbURL, listeners) })
	}
}

func benchBroker(b *testing.B, dbURL string, subs int) {
	ctx := context.Background()
	db := newPool(b, dbURL)
	broker := openT(b, db, pgpubsub.Config{Namespace: migrate(b, db, pgpubsub.Schema{}), CleanupInterval: -1})
	topic := topicPrefix()
	lats := make([][]time.Duration, subs)
	var wg sync.WaitGroup
	for k := range subs {
		sub, err := broker.Subscribe(ctx, topic, pubsub.Buffer(min(b.N, pubsub.MaxBuffer)))
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		lats[k] = make([]time.Duration, 0, b.N)
		wg.Go(func() {
			buf := make([]pubsub.Message, 0, 64)
			for len(lats[k]) < b.N {
				msgs, err := sub.NextBatch(ctx, buf[:0])
				if err != nil {
					b.Error(err)
					return
				}
				for _, m := range msgs {
					lats[k] = append(lats[k], latency(m.Data))
				}
			}
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := broker.Publish(ctx, pubsub.Message{Topic: topic, Data: stamped()}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	report(b, elapsed, slices.Concat(lats...))
}

func benchBare(b *testing.B, dbURL string, listeners int) {
	ctx := context.Background()
	db := newPool(b, dbURL)
	ns := migrate(b, db, pgpubsub.Schema{})
	if _, err := db.Exec(ctx, "CREATE TABLE "+ns+".bare (pos bigserial PRIMARY KEY, topic text NOT NULL, data bytea)"); err != nil {
		b.Fatal(err)
	}
	channel := ns + "_bare"
	lats := make([][]time.Duration, listeners)
	var wg sync.WaitGroup
	for k := range listeners {
		conn, err := pgx.ConnectConfig(ctx, db.Config().ConnConfig.Copy())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
			b.Fatal(err)
		}
		lats[k] = make([]time.Duration, 0, b.N)
		wg.Go(func() {
			for len(lats[k]) < b.N {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				_, payload, _ := strings.Cut(n.Payload, " ")
				data, err := base64.StdEncoding.DecodeString(payload)
				if err != nil {
					b.Error(err)
					return
				}
				lats[k] = append(lats[k], latency(data))
			}
		})
	}
	const insert = `WITH ins AS (INSERT INTO %s.bare (topic, data) VALUES ($1, $2) RETURNING pos)
SELECT pg_notify($3, pos::text || ' ' || $4) FROM ins`
	query := fmt.Sprintf(insert, ns)
	topic := topicPrefix()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		data := stamped()
		if _, err := db.Exec(ctx, query, topic, data, channel, base64.StdEncoding.EncodeToString(data)); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	report(b, elapsed, slices.Concat(lats...))
}

// BenchmarkPublishParallel measures what serializing publishers costs:
// four concurrent publishers through pgpubsub (which commit one at a time,
// holding the namespace's advisory lock) beside the bare INSERT + NOTIFY,
// which commits concurrently (and would let a reader skip a position).
func BenchmarkPublishParallel(b *testing.B) {
	dbURL := postgresURL(b)
	const publishers = 4
	b.Run("pgpubsub", func(b *testing.B) {
		db := newPool(b, dbURL, func(c *pgxpool.Config) { c.MaxConns = publishers })
		broker := openT(b, db, pgpubsub.Config{Namespace: migrate(b, db, pgpubsub.Schema{}), CleanupInterval: -1})
		topic := topicPrefix()
		parallel(b, publishers, func(ctx context.Context) error {
			_, err := broker.Publish(ctx, pubsub.Message{Topic: topic, Data: stamped()})
			return err
		})
	})
	b.Run("bare", func(b *testing.B) {
		db := newPool(b, dbURL, func(c *pgxpool.Config) { c.MaxConns = publishers })
		ns := migrate(b, db, pgpubsub.Schema{})
		if _, err := db.Exec(context.Background(), "CREATE TABLE "+ns+".bare (pos bigserial PRIMARY KEY, topic text NOT NULL, data bytea)"); err != nil {
			b.Fatal(err)
		}
		query := "WITH ins AS (INSERT INTO " + ns + ".bare (topic, data) VALUES ($1, $2) RETURNING pos) SELECT pg_notify($3, pos::text) FROM ins"
		topic := topicPrefix()
		parallel(b, publishers, func(ctx context.Context) error {
			_, err := db.Exec(ctx, query, topic, stamped(), ns+"_bare")
			return err
		})
	})
}

func parallel(b *testing.B, publishers int, publish func(context.Context) error) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < b.N; i += publishers {
				if err := publish(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

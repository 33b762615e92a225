package pgpubsub_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/faultproxy"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
)

// testCtx bounds a test only so that a broken broker fails instead of
// hanging.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, ctx context.Context, b pubsub.Publisher, topic, data string) pubsub.Cursor {
	t.Helper()
	c, err := b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte(data)})
	require.NoError(t, err, "Publish(%q, %q)", topic, data)
	return c
}

// expect reads len(want) messages and requires their data to be want.
func expect(t *testing.T, ctx context.Context, sub pubsub.Subscription, want ...string) []pubsub.Message {
	t.Helper()
	var got []string
	var msgs []pubsub.Message
	for len(got) < len(want) {
		m, err := sub.Next(ctx)
		require.NoError(t, err, "after %q, want %q", got, want)
		got = append(got, string(m.Data))
		msgs = append(msgs, m)
	}
	require.Equal(t, want, got, "messages received (got) vs published (want)")
	return msgs
}

func numbers(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

func topicPrefix() string { return "t" + strings.ToLower(rand.Text()[:10]) }

// proxied returns a proxy to the test database and the URL through it.
func proxied(t *testing.T, dbURL string) (*faultproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	p, err := faultproxy.New(host)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	return p, u.String()
}

// Two nodes, each with its own pool, as two processes would have.
func TestAcrossNodes(t *testing.T) {
	ctx, dbURL := testCtx(t), postgresURL(t)
	dbA, dbB := newPool(t, dbURL), newPool(t, dbURL)
	ns := migrate(t, dbA, pgpubsub.Schema{})
	a := openT(t, dbA, pgpubsub.Config{Namespace: ns})
	b := openT(t, dbB, pgpubsub.Config{Namespace: ns})
	orders := topicPrefix()

	sub, err := b.Subscribe(ctx, orders+".>")
	require.NoError(t, err)
	defer sub.Close()
	publish(t, ctx, a, orders+".eu", "1")
	publish(t, ctx, a, orders+".us.west", "2")
	got := expect(t, ctx, sub, "1", "2")
	assert.Equal(t, orders+".us.west", got[1].Topic)

	// A client that read "1" on node b reconnects to node a.
	resumed, err := a.Subscribe(ctx, orders+".*", pubsub.After(got[0].Cursor))
	require.NoError(t, err)
	defer resumed.Close()
	publish(t, ctx, b, orders+".us", "3")
	publish(t, ctx, b, orders+".eu", "4")
	expect(t, ctx, resumed, "3", "4") // "2" is on orders.us.west: not matched by orders.*

	wild, err := a.Subscribe(ctx, orders+".>", pubsub.After(got[0].Cursor))
	require.NoError(t, err)
	defer wild.Close()
	expect(t, ctx, wild, "2", "3", "4")
}

// The race the package exists to get right: positions are drawn at INSERT
// and become visible at COMMIT. Many publishers on several nodes publish at
// once, some in transactions that roll back (leaving holes in the
// sequence); every subscriber on every node receives every committed
// message exactly once, in position order, and a replay gives the same.
func TestConcurrentPublishersThroughSeveralNodes(t *testing.T) {
	const nodes, publishersPerNode, perPublisher = 3, 3, 150
	const total = nodes * publishersPerNode * perPublisher
	ctx, dbURL := testCtx(t), postgresURL(t)
	var brokers []*pgpubsub.Broker
	var pools []*pgxpool.Pool
	ns := ""
	for range nodes {
		db := newPool(t, dbURL)
		if ns == "" {
			ns = migrate(t, db, pgpubsub.Schema{})
		}
		pools = append(pools, db)
		brokers = append(brokers, openT(t, db, pgpubsub.Config{Namespace: ns}))
	}
	prefix := topicPrefix()

	var subs []pubsub.Subscription
	for _, b := range brokers {
		sub, err := b.Subscribe(ctx, prefix+".>", pubsub.Buffer(total))
		require.NoError(t, err)
		defer sub.Close()
		subs = append(subs, sub)
	}

	var mu sync.Mutex
	published := map[pubsub.Cursor]string{}
	var wg sync.WaitGroup
	for k, b := range brokers {
		for p := range publishersPerNode {
			wg.Go(func() {
				name := fmt.Sprintf("%d-%d", k, p)
				topic := prefix + ".pub" + name
				for i := range perPublisher {
					data := fmt.Sprintf("%s/%d", name, i)
					m := pubsub.Message{Topic: topic, Data: []byte(data)}
					var c pubsub.Cursor
					var err error
					if p == 0 { // in the caller's transaction, with rollbacks
						c, err = publishTx(ctx, pools[k], b, m, i%5 == 0)
					} else {
						c, err = b.Publish(ctx, m)
					}
					if !assert.NoError(t, err, "publisher %s, message %d", name, i) {
						return
					}
					if c != "" {
						mu.Lock()
						published[c] = data
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	committed := len(published)
	require.Less(t, committed, total, "some transactions rolled back")

	check := func(what string, sub pubsub.Subscription) {
		t.Helper()
		var last pubsub.Position
		seen := map[pubsub.Cursor]bool{}
		nextIndex := map[string]int{}
		for len(seen) < committed {
			m, err := sub.Next(ctx)
			require.NoError(t, err, "%s: after %d of %d messages", what, len(seen), committed)
			_, pos, err := m.Cursor.Parse()
			require.NoError(t, err)
			require.True(t, last.Less(pos), "%s: position %v after %v", what, pos, last)
			last = pos
			want, ok := published[m.Cursor]
			require.True(t, ok, "%s: %q (cursor %q) was not committed", what, m.Data, m.Cursor)
			require.Equal(t, want, string(m.Data), "%s: cursor %q", what, m.Cursor)
			seen[m.Cursor] = true
			name, i, _ := strings.Cut(string(m.Data), "/")
			n, _ := strconv.Atoi(i)
			require.GreaterOrEqual(t, n, nextIndex[name], "%s: publisher %s out of order", what, name)
			nextIndex[name] = n + 1
		}
	}
	for k, sub := range subs {
		check(fmt.Sprintf("live subscriber on node %d", k), sub)
	}
	replay, err := brokers[1].Subscribe(ctx, prefix+".>", pubsub.FromOldest())
	require.NoError(t, err)
	defer replay.Close()
	check("replay", replay)
}

// publishTx publishes m in a transaction of its own that commits, or rolls
// back (returning no cursor) when rollback is set.
func publishTx(ctx context.Context, db *pgxpool.Pool, b *pgpubsub.Broker, m pubsub.Message, rollback bool) (pubsub.Cursor, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	c, err := b.PublishTx(ctx, tx, m)
	if err != nil || rollback {
		return "", err
	}
	return c, tx.Commit(ctx)
}

func TestPublishTx(t *testing.T) {
	ctx, db := testCtx(t), newPool(t, postgresURL(t))
	b := openT(t, db, pgpubsub.Config{Namespace: migrate(t, db, pgpubsub.Schema{})})
	topic := topicPrefix()
	sub, err := b.Subscribe(ctx, topic)
	require.NoError(t, err)
	defer sub.Close()

	_, err = publishTx(ctx, db, b, pubsub.Message{Topic: topic, Data: []byte("rolled back")}, true)
	require.NoError(t, err)
	c, err := publishTx(ctx, db, b, pubsub.Message{Topic: topic, Data: []byte("committed")}, false)
	require.NoError(t, err)
	got := expect(t, ctx, sub, "committed")
	assert.Equal(t, c, got[0].Cursor)
}

// Ten thousand subscribers of a node cost it no more connections than one.
func TestOneEngineConnectionPerNode(t *testing.T) {
	const subscribers, maxConns = 10_000, 2
	ctx, dbURL := testCtx(t), postgresURL(t)
	proxy, viaProxy := proxied(t, dbURL)
	ns := migrate(t, newPool(t, dbURL), pgpubsub.Schema{})
	db := newPool(t, viaProxy, func(c *pgxpool.Config) { c.MaxConns = maxConns })
	b := openT(t, db, pgpubsub.Config{Namespace: ns})
	topic := topicPrefix()

	subs := make([]pubsub.Subscription, 0, subscribers)
	for len(subs) < subscribers {
		sub, err := b.Subscribe(ctx, topic, pubsub.Buffer(4))
		require.NoError(t, err)
		defer sub.Close()
		subs = append(subs, sub)
		if len(subs) == 1 {
			require.LessOrEqual(t, proxy.Accepted(), 1+maxConns, "connections with one subscriber: the feed's and the pool's")
		}
	}
	opened := proxy.Accepted()
	assert.LessOrEqual(t, opened, 1+maxConns, "connections opened with %d subscribers", subscribers)
	assert.Equal(t, subscribers, b.Stats().Subscribers)

	publish(t, ctx, b, topic, "to all")
	for k, sub := range subs {
		m, err := sub.Next(ctx)
		require.NoError(t, err, "subscriber %d", k)
		require.Equal(t, "to all", string(m.Data), "subscriber %d", k)
	}
	assert.Equal(t, opened, proxy.Accepted(), "connections opened while delivering")
}

// milestones lets a test wait, without sleeping, until a publisher has
// published message i.
type milestones struct {
	mu   sync.Mutex
	done int
	at   map[int]chan struct{}
}

func (m *milestones) reached(i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = i
	for k, ch := range m.at {
		if k <= i {
			close(ch)
			delete(m.at, k)
		}
	}
}

func (m *milestones) wait(t *testing.T, ctx context.Context, i int) {
	t.Helper()
	m.mu.Lock()
	if m.done >= i {
		m.mu.Unlock()
		return
	}
	if m.at == nil {
		m.at = map[int]chan struct{}{}
	}
	ch, ok := m.at[i]
	if !ok {
		ch = make(chan struct{})
		m.at[i] = ch
	}
	m.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("the publisher did not reach message %d: %v", i, ctx.Err())
	}
}

// The node's connection is cut, then the engine is unreachable for a
// while, as a publisher on another node keeps publishing: afterwards the
// subscriber has every message, in order, and no gap (nothing was lost).
func TestFeedResumesAfterConnectionLoss(t *testing.T) {
	const n = 400
	ctx, dbURL := testCtx(t), postgresURL(t)
	proxy, viaProxy := proxied(t, dbURL)
	direct := newPool(t, dbURL)
	ns := migrate(t, direct, pgpubsub.Schema{})
	fast := pgpubsub.Config{Namespace: ns, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond}
	node := openT(t, newPool(t, viaProxy), fast)
	publisher := openT(t, direct, pgpubsub.Config{Namespace: ns})
	topic := topicPrefix()

	sub, err := node.Subscribe(ctx, topic, pubsub.Buffer(n))
	require.NoError(t, err)
	defer sub.Close()

	var progress milestones
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := publisher.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte(strconv.Itoa(i))}); err != nil {
				done <- err
				return
			}
			progress.reached(i)
		}
		done <- nil
	}()

	expect(t, ctx, sub, numbers(1, 50)...)
	proxy.Cut() // the feed reconnects at once
	progress.wait(t, ctx, 150)
	proxy.Pause() // and now it cannot
	_, err = node.Publish(ctx, pubsub.Message{Topic: topic + ".x", Data: []byte("lost")})
	assert.Error(t, err, "Publish while the engine is unreachable")
	progress.wait(t, ctx, 300)
	proxy.Resume()
	require.NoError(t, <-done)

	expect(t, ctx, sub, numbers(51, n)...)
	assert.Greater(t, proxy.Accepted(), 2, "the node reconnected")
}

// A feed that was away while retention trimmed what it missed reports a
// gap, then continues with what is retained.
func TestFeedReportsGapWhenMissedMessagesWereTrimmed(t *testing.T) {
	ctx, dbURL := testCtx(t), postgresURL(t)
	proxy, viaProxy := proxied(t, dbURL)
	direct := newPool(t, dbURL)
	ns := migrate(t, direct, pgpubsub.Schema{MaxMessages: 5})
	fast := pgpubsub.Config{Namespace: ns, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond}
	node := openT(t, newPool(t, viaProxy), fast)
	publisher := openT(t, direct, pgpubsub.Config{Namespace: ns, CleanupInterval: -1})
	topic := topicPrefix()

	sub, err := node.Subscribe(ctx, topic)
	require.NoError(t, err)
	defer sub.Close()
	publish(t, ctx, publisher, topic, "1")
	expect(t, ctx, sub, "1")

	proxy.Pause()
	for i := 2; i <= 20; i++ {
		publish(t, ctx, publisher, topic, strconv.Itoa(i))
	}
	deleted, err := publisher.Cleanup(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 15, deleted, "Cleanup keeps the newest 5 of 20")
	proxy.Resume()

	_, err = sub.Next(ctx)
	require.ErrorIs(t, err, pubsub.ErrGap)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "trimmed", gap.Reason)
	expect(t, ctx, sub, numbers(16, 20)...)
	publish(t, ctx, publisher, topic, "21")
	expect(t, ctx, sub, "21")
}

// A namespace dropped and migrated again is a new history: the node's
// subscribers are told (ErrGap, "epoch"), and old cursors are foreign.
func TestNewEpochWhenNamespaceIsRecreated(t *testing.T) {
	ctx, db := testCtx(t), newPool(t, postgresURL(t))
	ns := migrate(t, db, pgpubsub.Schema{})
	b := openT(t, db, pgpubsub.Config{Namespace: ns})
	topic := topicPrefix()
	sub, err := b.Subscribe(ctx, topic)
	require.NoError(t, err)
	defer sub.Close()
	old := publish(t, ctx, b, topic, "1")
	expect(t, ctx, sub, "1")

	require.NoError(t, pgpubsub.DropNamespace(ctx, db, ns))
	require.NoError(t, pgpubsub.Migrate(ctx, db, pgpubsub.Schema{Namespace: ns}))
	fresh := publish(t, ctx, b, topic, "2")
	assert.NotEqual(t, strings.Split(string(old), ".")[0], strings.Split(string(fresh), ".")[0], "epochs")

	_, err = sub.Next(ctx)
	var gap *pubsub.GapError
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "epoch", gap.Reason)
	expect(t, ctx, sub, "2")

	resumed, err := b.Subscribe(ctx, topic, pubsub.After(old))
	require.NoError(t, err)
	defer resumed.Close()
	_, err = resumed.Next(ctx)
	require.ErrorAs(t, err, &gap)
	assert.Equal(t, "epoch", gap.Reason)
	expect(t, ctx, resumed, "2")
}

// Messages too large for a NOTIFY payload (8000 bytes) arrive through the
// table.
func TestLargeMessages(t *testing.T) {
	ctx, db := testCtx(t), newPool(t, postgresURL(t))
	b := openT(t, db, pgpubsub.Config{Namespace: migrate(t, db, pgpubsub.Schema{})})
	topic := topicPrefix()
	sub, err := b.Subscribe(ctx, topic)
	require.NoError(t, err)
	defer sub.Close()
	big := strings.Repeat("x", 100_000)
	header := map[string]string{"k": strings.Repeat("h", 9000)}
	c, err := b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte(big), Header: header, ID: "big"})
	require.NoError(t, err)
	publish(t, ctx, b, topic, "small")
	live := expect(t, ctx, sub, big, "small")
	assert.Equal(t, header, live[0].Header)
	assert.Equal(t, "big", live[0].ID)
	assert.Equal(t, c, live[0].Cursor)

	replay, err := b.Subscribe(ctx, topic, pubsub.FromOldest())
	require.NoError(t, err)
	defer replay.Close()
	replayed := expect(t, ctx, replay, big, "small")
	for k := range live {
		assert.Equal(t, live[k].Header, replayed[k].Header)
		assert.True(t, live[k].Time.Equal(replayed[k].Time), "time live %v, replayed %v", live[k].Time, replayed[k].Time)
	}

	_, err = b.Publish(ctx, pubsub.Message{Topic: topic, Data: make([]byte, pubsub.DefaultMaxMessageSize+1)})
	assert.ErrorIs(t, err, pubsub.ErrTooLarge)
}

func TestCleanupAppliesRetention(t *testing.T) {
	ctx, db := testCtx(t), newPool(t, postgresURL(t))
	t.Run("by count", func(t *testing.T) {
		b := openT(t, db, pgpubsub.Config{Namespace: migrate(t, db, pgpubsub.Schema{MaxMessages: 10}), CleanupInterval: -1})
		topic := topicPrefix()
		var cs []pubsub.Cursor
		for i := 1; i <= 30; i++ {
			cs = append(cs, publish(t, ctx, b, topic, strconv.Itoa(i)))
		}
		deleted, err := b.Cleanup(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 20, deleted)
		deleted, err = b.Cleanup(ctx)
		require.NoError(t, err)
		assert.Zero(t, deleted, "a second Cleanup")

		all, err := b.Subscribe(ctx, topic, pubsub.FromOldest())
		require.NoError(t, err)
		defer all.Close()
		expect(t, ctx, all, numbers(21, 30)...)
		after, err := b.Subscribe(ctx, topic, pubsub.After(cs[19])) // 20: deleted, 21 retained
		require.NoError(t, err)
		defer after.Close()
		expect(t, ctx, after, numbers(21, 30)...)
		gapped, err := b.Subscribe(ctx, topic, pubsub.After(cs[4]))
		require.NoError(t, err)
		defer gapped.Close()
		_, err = gapped.Next(ctx)
		assert.ErrorIs(t, err, pubsub.ErrGap)
	})
	t.Run("by age", func(t *testing.T) {
		// A bound far below a round trip: whatever was published before the
		// cleanup began is older than it.
		b := openT(t, db, pgpubsub.Config{Namespace: migrate(t, db, pgpubsub.Schema{MaxAge: time.Microsecond}), CleanupInterval: -1})
		topic := topicPrefix()
		c := publish(t, ctx, b, topic, "1")
		publish(t, ctx, b, topic, "2")
		deleted, err := b.Cleanup(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 2, deleted)
		sub, err := b.Subscribe(ctx, topic, pubsub.After(c))
		require.NoError(t, err)
		defer sub.Close()
		_, err = sub.Next(ctx)
		assert.ErrorIs(t, err, pubsub.ErrGap)
	})
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	ctx, db := testCtx(t), newPool(t, postgresURL(t))
	ns := migrate(t, db, pgpubsub.Schema{})
	b := openT(t, db, pgpubsub.Config{Namespace: ns})
	epoch := b.Epoch()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { assert.NoError(t, pgpubsub.Migrate(ctx, db, pgpubsub.Schema{Namespace: ns})) })
	}
	wg.Wait()
	again := openT(t, db, pgpubsub.Config{Namespace: ns})
	assert.Equal(t, epoch, again.Epoch(), "Migrate of an existing namespace keeps its epoch")
}

func TestNewFailsOnAMissingNamespace(t *testing.T) {
	db := newPool(t, postgresURL(t))
	_, err := pgpubsub.New(testCtx(t), db, pgpubsub.Config{Namespace: "pgpubsub_test_never_migrated"})
	assert.ErrorIs(t, err, pgpubsub.ErrNotMigrated)
	_, err = pgpubsub.New(testCtx(t), db, pgpubsub.Config{Namespace: "Not Valid"})
	assert.Error(t, err)
}

func TestCloseReleasesEverything(t *testing.T) {
	dbURL := postgresURL(t)
	ignore := goleak.IgnoreCurrent()
	ctx := testCtx(t)
	db, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	ns, owned := "pgpubsub_test_"+strings.ToLower(rand.Text()[:12]), "pgpubsub_test_"+strings.ToLower(rand.Text()[:12])
	for _, ns := range []string{ns, owned} {
		require.NoError(t, pgpubsub.Migrate(ctx, db, pgpubsub.Schema{Namespace: ns}))
	}
	b := open(t, db, pgpubsub.Config{Namespace: ns})
	topic := topicPrefix()
	sub, err := b.Subscribe(ctx, topic)
	require.NoError(t, err)
	c := publish(t, ctx, b, topic, "1")
	expect(t, ctx, sub, "1")
	replay, err := b.Subscribe(ctx, topic, pubsub.After(c))
	require.NoError(t, err)

	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "second Close")
	_, err = sub.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	_, err = replay.Next(ctx)
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	_, err = b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte("2")})
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	_, err = b.Subscribe(ctx, topic)
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	tx, err := db.Begin(ctx)
	require.NoError(t, err, "the caller's pool stays open")
	_, err = b.PublishTx(ctx, tx, pubsub.Message{Topic: topic})
	assert.ErrorIs(t, err, pubsub.ErrClosed)
	require.NoError(t, tx.Rollback(ctx))

	// A broker that opened its own pool closes it.
	ob, err := pgpubsub.Connect(ctx, dbURL, pgpubsub.Config{Namespace: owned})
	require.NoError(t, err)
	_, err = ob.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte("x")})
	require.NoError(t, err)
	require.NoError(t, ob.Close())

	for _, ns := range []string{ns, owned} {
		require.NoError(t, pgpubsub.DropNamespace(ctx, db, ns))
	}
	db.Close()
	goleak.VerifyNone(t, ignore)
}

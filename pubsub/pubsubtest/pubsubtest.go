// Package pubsubtest is the conformance suite that every pubsub backend must
// pass: the memory broker and the engine-backed brokers alike. It checks the
// contract written on pubsub.Publisher, pubsub.Subscriber,
// pubsub.Subscription and the subscribe options, so that SSE, push and long
// polling behave the same whichever broker they are given.
//
// A backend's test calls Run with a constructor of fresh brokers:
//
//	func TestConformance(t *testing.T) {
//		pubsubtest.Run(t, func(t *testing.T) pubsub.Backend {
//			return mybackend.New(...)
//		})
//	}
//
// or RunWith, to say what else it can do (Options). The suite closes every
// broker it asks for, once, when the subtest that asked ends; a constructor
// may register more cleanup of its own with t.Cleanup (closing a client
// connection, say), which runs after the broker is closed (cleanups run
// last registered, first run).
//
// Brokers that share one engine (one Redis, one NATS server, one database)
// need no cleaning between runs: each subtest publishes and subscribes only
// under a topic prefix of its own, a random token, so history left by earlier
// runs or other subtests is never seen. Two subtests need brokers that do not
// share history: the epoch-gap ones, which take a second broker and, when it
// has the same epoch as the first, make up a foreign one.
//
// What the suite assumes beyond the documented contract:
//   - Subscribe is in effect when it returns: a message published after it
//     returns is delivered.
//   - A broker fans out to the subscriptions of one pattern together: once one
//     of them has received a message, the others have been offered it. The
//     overflow subtests read a fast "witness" subscription first to know that
//     a slow one has seen everything, instead of sleeping.
//   - Ending the context passed to Subscribe ends the subscription: Next then
//     returns an error that is context.Canceled or pubsub.ErrClosed; either is
//     accepted.
//
// No subtest sleeps to wait for something or asserts how long anything took.
// Contexts with a generous deadline are only a safety net, so that a broken
// backend fails instead of hanging. The one subtest that needs real time is
// the Block policy's timeout, which configures a short BlockTimeout and
// checks only that Publish returns and the subscription ends.
package pubsubtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/pubsub"
)

// Options says how to make the brokers under test and what they can do.
type Options struct {
	// NewBackend returns a fresh broker. Required.
	NewBackend func(t *testing.T) pubsub.Backend

	// LiveOnly declares a backend that retains no history; the subtests of
	// replay (After, FromOldest) and of gap signals are skipped. The default,
	// false, requires the backend to retain at least the last 1000 messages
	// of every topic.
	LiveOnly bool

	// NewSmallHistory, if not nil, returns a fresh broker that retains exactly
	// the last n messages of every topic, with no age bound. It enables the
	// subtests of gaps left by trimming. Nil skips them.
	NewSmallHistory func(t *testing.T, n int) pubsub.Backend

	// FeedBlocks declares a backend whose Block subscriptions hold back the
	// node's feed from its engine rather than Publish itself (the
	// engine-backed brokers built on pubsub.Relay: a publisher on another
	// node cannot wait for a local reader). The Block subtest then checks
	// that a Block subscription loses nothing instead of that Publish waits.
	FeedBlocks bool
}

// Run runs the suite on the brokers newBackend returns, which must retain
// history (see Options.LiveOnly). It is RunWith with only NewBackend set.
func Run(t *testing.T, newBackend func(t *testing.T) pubsub.Backend) {
	RunWith(t, Options{NewBackend: newBackend})
}

// RunWith runs the suite as opts describes.
func RunWith(t *testing.T, opts Options) {
	if opts.NewBackend == nil {
		t.Fatal("pubsubtest: Options.NewBackend is nil")
	}
	s := &suite{opts: opts}
	t.Run("Publish", s.testPublish)
	t.Run("Subscribe", s.testSubscribe)
	t.Run("Close", s.testClose)
	t.Run("Context", s.testContext)
	t.Run("Overflow", s.testOverflow)
	t.Run("Replay", s.testReplay)
	t.Run("Gap", s.testGap)
	t.Run("leaves no goroutines behind", s.testNoLeaks)
}

// safetyNet bounds every wait, only so that a broken backend fails instead
// of hanging. No test expects it to expire.
const safetyNet = 20 * time.Second

type suite struct{ opts Options }

// open returns a fresh broker that is closed when t ends.
func (s *suite) open(t *testing.T) pubsub.Backend {
	t.Helper()
	return closeAtEnd(t, s.opts.NewBackend(t))
}

func (s *suite) needRetention(t *testing.T) {
	t.Helper()
	if s.opts.LiveOnly {
		t.Skip("the backend is LiveOnly: it retains no history")
	}
}

func closeAtEnd(t *testing.T, b pubsub.Backend) pubsub.Backend {
	t.Helper()
	require.NotNil(t, b, "the constructor returned a nil Backend")
	c := &closeOnce{Backend: b}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closeOnce lets a subtest close its broker early and the cleanup close it
// again without calling the backend's Close twice.
type closeOnce struct {
	pubsub.Backend
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.Backend.Close() })
	return c.err
}

// safetyCtx returns the subtest's context bounded by the safety net.
func safetyCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), safetyNet)
	t.Cleanup(cancel)
	return ctx
}

// subjects returns a function that builds subjects under a prefix token no
// other subtest, and no earlier run on a shared engine, uses.
func subjects(t *testing.T) func(tokens ...string) string {
	prefix := "pubsubtest-" + strings.ToLower(rand.Text()[:16])
	return func(tokens ...string) string {
		return prefix + "." + strings.Join(tokens, ".")
	}
}

// msg is the i-th message of a test: its Data is i in decimal.
func msg(topic string, i int) pubsub.Message {
	return pubsub.Message{Topic: topic, Data: []byte(strconv.Itoa(i))}
}

// index returns the i of a message made by msg, or -1.
func index(m pubsub.Message) int {
	i, err := strconv.Atoi(string(m.Data))
	if err != nil {
		return -1
	}
	return i
}

func indexes(ms []pubsub.Message) []int {
	out := make([]int, len(ms))
	for k, m := range ms {
		out[k] = index(m)
	}
	return out
}

// seq returns from, from+1, ..., to.
func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func subscribe(t *testing.T, ctx context.Context, b pubsub.Subscriber, pattern string, opts ...pubsub.SubscribeOption) pubsub.Subscription {
	t.Helper()
	sub, err := b.Subscribe(ctx, pattern, opts...)
	require.NoError(t, err, "Subscribe(%q)", pattern)
	require.NotNil(t, sub, "Subscribe(%q) returned a nil Subscription", pattern)
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// publish publishes msg(topic, i) for each i and returns their cursors.
func publish(t *testing.T, ctx context.Context, b pubsub.Publisher, topic string, is ...int) []pubsub.Cursor {
	t.Helper()
	cs := make([]pubsub.Cursor, len(is))
	for k, i := range is {
		c, err := b.Publish(ctx, msg(topic, i))
		require.NoError(t, err, "Publish(%q, %d)", topic, i)
		require.NotEmpty(t, c, "Publish(%q, %d) returned an empty cursor", topic, i)
		cs[k] = c
	}
	return cs
}

// publishAsync publishes msg(topicOf(i), i) for i in from..to from a
// goroutine. It closes started once a quarter of them are out (or the
// goroutine stopped), and sends the outcome on done.
func publishAsync(ctx context.Context, b pubsub.Publisher, topicOf func(i int) string, from, to int) (started <-chan struct{}, done <-chan error) {
	startc, donec := make(chan struct{}), make(chan error, 1)
	go func() {
		var once sync.Once
		start := func() { once.Do(func() { close(startc) }) }
		defer start()
		for i := from; i <= to; i++ {
			if i == from+(to-from)/4 {
				start()
			}
			if _, err := b.Publish(ctx, msg(topicOf(i), i)); err != nil {
				donec <- fmt.Errorf("Publish(%q, %d): %w", topicOf(i), i, err)
				return
			}
		}
		donec <- nil
	}()
	return startc, donec
}

// wait waits for the outcome of publishAsync or of a single Publish.
func wait(t *testing.T, ctx context.Context, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatalf("gave up waiting for a publisher: %v", ctx.Err())
	}
}

func next(t *testing.T, ctx context.Context, sub pubsub.Subscription) pubsub.Message {
	t.Helper()
	m, err := sub.Next(ctx)
	require.NoError(t, err, "Next")
	return m
}

// readN reads n messages with Next. Safe to call from any goroutine.
func readN(ctx context.Context, sub pubsub.Subscription, n int) ([]pubsub.Message, error) {
	out := make([]pubsub.Message, 0, n)
	for len(out) < n {
		m, err := sub.Next(ctx)
		if err != nil {
			return out, fmt.Errorf("after %d of %d messages, Next: %w", len(out), n, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// expect reads len(want) messages and requires their indexes to be want.
func expect(t *testing.T, ctx context.Context, sub pubsub.Subscription, want ...int) []pubsub.Message {
	t.Helper()
	got, err := readN(ctx, sub, len(want))
	require.NoError(t, err, "got %v so far, want %v", indexes(got), want)
	require.Equal(t, want, indexes(got), "messages received (got) vs published (want)")
	return got
}

// readUntilErr reads until Next fails, at most limit messages.
func readUntilErr(t *testing.T, ctx context.Context, sub pubsub.Subscription, limit int) ([]int, error) {
	t.Helper()
	var got []int
	for len(got) <= limit {
		m, err := sub.Next(ctx)
		if err != nil {
			return got, err
		}
		got = append(got, index(m))
	}
	t.Fatalf("got %v and no error, want an error after at most %d messages", got, limit)
	return nil, nil
}

// ---------------------------------------------------------------------------

func (s *suite) testPublish(t *testing.T) {
	t.Run("delivers topic, data and header", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("orders", "eu", "42")
		sub := subscribe(t, ctx, b, topic)

		header := map[string]string{"content-type": "text/plain", "trace": "abc"}
		c, err := b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte("hello"), Header: header})
		require.NoError(t, err)

		m := next(t, ctx, sub)
		assert.Equal(t, topic, m.Topic)
		assert.Equal(t, []byte("hello"), m.Data)
		assert.Equal(t, header, m.Header)
		assert.Equal(t, c, m.Cursor, "the message's cursor is the one Publish returned")
	})

	t.Run("sets cursor, time and a unique ID", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		sub := subscribe(t, ctx, b, topic)
		cs := publish(t, ctx, b, topic, 1, 2, 3)

		seen := map[string]bool{}
		for k, m := range expect(t, ctx, sub, 1, 2, 3) {
			assert.Equal(t, cs[k], m.Cursor, "message %d: cursor vs the one Publish returned", k+1)
			_, _, err := m.Cursor.Parse()
			assert.NoError(t, err, "message %d: cursor %q does not parse", k+1, m.Cursor)
			assert.False(t, m.Time.IsZero(), "message %d: Time not set", k+1)
			assert.NotEmpty(t, m.ID, "message %d: ID not set", k+1)
			assert.False(t, seen[m.ID], "message %d: ID %q given twice", k+1, m.ID)
			seen[m.ID] = true
		}
		assert.Len(t, slices.Compact(slices.Sorted(slices.Values(cs))), len(cs), "cursors %v not distinct", cs)
	})

	t.Run("keeps the publisher's ID", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		sub := subscribe(t, ctx, b, topic)
		_, err := b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte("1"), ID: "order-42-created"})
		require.NoError(t, err)
		assert.Equal(t, "order-42-created", next(t, ctx, sub).ID)
	})

	t.Run("rejects an invalid topic", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		for _, topic := range []string{
			"",
			subject("a") + "..b",
			subject("a", "*"),
			subject("a", ">"),
			subject("a b"),
			subject("a*"),
		} {
			_, err := b.Publish(ctx, pubsub.Message{Topic: topic, Data: []byte("x")})
			assert.ErrorIs(t, err, pubsub.ErrInvalidSubject, "Publish to %q", topic)
		}
	})
}

func (s *suite) testSubscribe(t *testing.T) {
	t.Run("rejects an invalid pattern", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		for _, pattern := range []string{
			"",
			subject("a") + "..b",
			subject(">", "b"),
			subject("a*"),
			subject("a b"),
		} {
			sub, err := b.Subscribe(ctx, pattern)
			assert.ErrorIs(t, err, pubsub.ErrInvalidSubject, "Subscribe(%q)", pattern)
			if sub != nil {
				_ = sub.Close()
			}
		}
	})

	t.Run("rejects an invalid cursor", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		for _, c := range []pubsub.Cursor{"garbage", "epoch.", ".7", "epoch.x", "epoch.007"} {
			sub, err := b.Subscribe(ctx, subject("t"), pubsub.After(c))
			assert.ErrorIs(t, err, pubsub.ErrInvalidCursor, "Subscribe After(%q)", c)
			if sub != nil {
				_ = sub.Close()
			}
		}
	})

	t.Run("NextBatch with an ended context drains without waiting", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		sub := subscribe(t, ctx, b, topic)
		done, cancel := context.WithCancel(ctx)
		cancel()
		got, err := sub.NextBatch(done, nil)
		require.ErrorIs(t, err, context.Canceled, "nothing waiting: ctx.Err() at once")
		assert.Empty(t, got)
		witness := subscribe(t, ctx, b, topic)
		publish(t, ctx, b, topic, 1, 2, 3)
		expect(t, ctx, witness, 1, 2, 3) // so sub has been offered them too
		got, err = sub.NextBatch(done, make([]pubsub.Message, 0, 10))
		require.NoError(t, err, "messages waiting: returned without an error")
		assert.Equal(t, []int{1, 2, 3}, indexes(got))
		_, err = sub.NextBatch(done, nil)
		require.ErrorIs(t, err, context.Canceled)
		publish(t, ctx, b, topic, 4)
		expect(t, ctx, sub, 4) // the subscription goes on
	})

	t.Run("keeps per-topic order through Next and NextBatch", func(t *testing.T) {
		const n = 1000
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("ordered")
		sub := subscribe(t, ctx, b, topic, pubsub.Buffer(n))
		_, done := publishAsync(ctx, b, func(int) string { return topic }, 1, n)

		var got []pubsub.Message
		for round := 0; len(got) < n; round++ {
			if round%4 == 0 {
				got = append(got, next(t, ctx, sub))
				continue
			}
			var buf []pubsub.Message
			switch round % 4 {
			case 1: // empty, with room
				buf = make([]pubsub.Message, 0, 16)
			case 2: // holding messages already, with room
				buf = make([]pubsub.Message, 2, 9)
				buf[0].Topic, buf[1].Topic = "kept-0", "kept-1"
			case 3: // nil: no room, still at least one
			}
			out, err := sub.NextBatch(ctx, buf)
			require.NoError(t, err, "NextBatch after %d messages", len(got))
			added := len(out) - len(buf)
			require.GreaterOrEqual(t, added, 1, "NextBatch appended nothing")
			require.LessOrEqual(t, len(out), max(cap(buf), len(buf)+1),
				"NextBatch returned %d messages for a buffer of len %d, cap %d", len(out), len(buf), cap(buf))
			for k := range buf {
				require.Equal(t, buf[k].Topic, out[k].Topic, "NextBatch changed element %d already in buf", k)
			}
			got = append(got, out[len(buf):]...)
		}
		wait(t, ctx, done)

		require.Equal(t, seq(1, n), indexes(got))
		ids, cursors := map[string]bool{}, map[pubsub.Cursor]bool{}
		for _, m := range got {
			require.Equal(t, topic, m.Topic)
			require.False(t, ids[m.ID], "ID %q given twice", m.ID)
			require.False(t, cursors[m.Cursor], "cursor %q given twice", m.Cursor)
			ids[m.ID], cursors[m.Cursor] = true, true
		}
	})

	t.Run("fans out every message to every subscriber", func(t *testing.T) {
		const subscribers, n = 20, 200
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("fanout")
		subs := make([]pubsub.Subscription, subscribers)
		for k := range subs {
			subs[k] = subscribe(t, ctx, b, topic)
		}

		var wg sync.WaitGroup
		for k, sub := range subs {
			wg.Go(func() {
				got, err := readN(ctx, sub, n)
				assert.NoError(t, err, "subscriber %d", k)
				assert.Equal(t, seq(1, n), indexes(got), "subscriber %d", k)
			})
		}
		publish(t, ctx, b, topic, seq(1, n)...)
		wg.Wait()
	})

	t.Run("matches wildcard patterns", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		patterns := []string{
			subject("a", "b"),
			subject("a", "*"),
			subject("a", ">"),
			subject("a", "*", "c"),
			subject("*", "b", ">"),
			subject("*"),
			subject("*", "*"),
			subject(">"),
		}
		topics := []string{
			subject("a"),
			subject("a", "b"),
			subject("a", "b", "c"),
			subject("a", "x", "c"),
			subject("a", "b", "c", "d"),
			subject("a", "bc"),
			subject("ab", "c"),
			subject("x", "b"),
			subject("x", "b", "y"),
			subject("x", "b", "y", "z"),
			subject("b"),
		}
		subs := make([]pubsub.Subscription, len(patterns))
		for k, p := range patterns {
			subs[k] = subscribe(t, ctx, b, p)
		}

		// Each topic twice, so that order within a topic shows.
		var published []pubsub.Message
		for round := range 2 {
			for k, topic := range topics {
				m := msg(topic, round*len(topics)+k)
				_, err := b.Publish(ctx, m)
				require.NoError(t, err)
				published = append(published, m)
			}
		}
		// Then a fence for each pattern, on a topic it matches (its wildcards
		// made literal). Order holds only per topic, so a subscriber has
		// everything once it has both its own fence and as many messages as
		// it expects; other fences it matches are skipped.
		for k, p := range patterns {
			fence := strings.NewReplacer("*", "fence", ">", "fence").Replace(p)
			_, err := b.Publish(ctx, pubsub.Message{Topic: fence, Header: map[string]string{"fence": strconv.Itoa(k)}})
			require.NoError(t, err)
		}

		for k, p := range patterns {
			var want []int
			for _, m := range published {
				if pubsub.Match(p, m.Topic) {
					want = append(want, index(m))
				}
			}
			var got []pubsub.Message
			for fenced := false; !fenced || len(got) < len(want); {
				m := next(t, ctx, subs[k])
				require.True(t, pubsub.Match(p, m.Topic), "pattern %q received topic %q", p, m.Topic)
				if f, ok := m.Header["fence"]; ok {
					fenced = fenced || f == strconv.Itoa(k)
					continue
				}
				got = append(got, m)
			}
			checkPerTopicOrder(t, got, p)
			assert.Equal(t, want, slices.Sorted(slices.Values(indexes(got))), "pattern %q: messages received (got) vs matching ones published (want)", p)
		}
	})

	t.Run("keeps each publisher's order under concurrent publishers", func(t *testing.T) {
		const publishers, perPublisher = 4, 500
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		// Publisher p sends its even messages to pub.p and its odd ones to
		// shared.
		topicOf := func(p, i int) string {
			if i%2 == 0 {
				return subject("pub", strconv.Itoa(p))
			}
			return subject("shared")
		}
		patterns := map[string]int{ // pattern: how many messages it gets
			subject(">"):        publishers * perPublisher,
			subject("shared"):   publishers * perPublisher / 2,
			subject("pub", "*"): publishers * perPublisher / 2,
			subject("pub", "0"): perPublisher / 2,
		}

		var readers sync.WaitGroup
		for p, n := range patterns {
			sub := subscribe(t, ctx, b, p, pubsub.Buffer(n))
			readers.Go(func() {
				got, err := readN(ctx, sub, n)
				if !assert.NoError(t, err, "pattern %q", p) {
					return
				}
				// Per topic and publisher: 0, 2, 4, ... or 1, 3, 5, ...
				last := map[string]int{}
				count := map[int]int{}
				for _, m := range got {
					var pub, i int
					if _, err := fmt.Sscanf(string(m.Data), "%d/%d", &pub, &i); !assert.NoError(t, err, "pattern %q: data %q", p, m.Data) {
						return
					}
					assert.True(t, pubsub.Match(p, m.Topic), "pattern %q received topic %q", p, m.Topic)
					assert.Equal(t, topicOf(pub, i), m.Topic, "pattern %q: message %d/%d", p, pub, i)
					key := m.Topic + "/" + strconv.Itoa(pub)
					if prev, ok := last[key]; ok && !assert.Greater(t, i, prev, "pattern %q: publisher %d's messages on %q out of order", p, pub, m.Topic) {
						return
					}
					last[key] = i
					count[pub]++
				}
				for pub := range publishers {
					want := perPublisher
					switch p {
					case subject("shared"), subject("pub", "*"):
						want = perPublisher / 2
					case subject("pub", "0"):
						want = 0
						if pub == 0 {
							want = perPublisher / 2
						}
					}
					assert.Equal(t, want, count[pub], "pattern %q: messages of publisher %d", p, pub)
				}
			})
		}

		var pubs sync.WaitGroup
		for p := range publishers {
			pubs.Go(func() {
				for i := range perPublisher {
					m := pubsub.Message{Topic: topicOf(p, i), Data: fmt.Appendf(nil, "%d/%d", p, i)}
					if _, err := b.Publish(ctx, m); !assert.NoError(t, err, "publisher %d, message %d", p, i) {
						return
					}
				}
			})
		}
		pubs.Wait()
		readers.Wait()
	})
}

// checkPerTopicOrder checks that on each topic the indexes of ms increase.
func checkPerTopicOrder(t *testing.T, ms []pubsub.Message, pattern string) {
	t.Helper()
	last := map[string]int{}
	for _, m := range ms {
		if prev, ok := last[m.Topic]; ok {
			assert.Greater(t, index(m), prev, "pattern %q: messages on %q out of order", pattern, m.Topic)
		}
		last[m.Topic] = index(m)
	}
}

func (s *suite) testClose(t *testing.T) {
	t.Run("closed subscription returns ErrClosed while others still receive", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		closed, open := subscribe(t, ctx, b, topic), subscribe(t, ctx, b, topic)

		publish(t, ctx, b, topic, 1)
		expect(t, ctx, closed, 1)
		expect(t, ctx, open, 1)
		publish(t, ctx, b, topic, 2) // left unread in closed

		require.NoError(t, closed.Close())
		_, err := closed.Next(ctx)
		assert.ErrorIs(t, err, pubsub.ErrClosed, "Next after Close, with a message unread")
		buf := []pubsub.Message{{Topic: "kept"}}
		out, err := closed.NextBatch(ctx, buf)
		assert.ErrorIs(t, err, pubsub.ErrClosed, "NextBatch after Close")
		assert.Equal(t, buf, out, "NextBatch changed buf on error")
		assert.NoError(t, closed.Close(), "second Close")

		publish(t, ctx, b, topic, 3)
		expect(t, ctx, open, 2, 3)
	})

	t.Run("subscription Close unblocks Next", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		sub := subscribe(t, ctx, b, subject("t"))
		errc := blockedNext(ctx, sub)
		require.NoError(t, sub.Close())
		assert.ErrorIs(t, <-errc, pubsub.ErrClosed)
	})

	t.Run("broker Close ends subscriptions and fails Publish and Subscribe", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		blocked, idle := subscribe(t, ctx, b, topic), subscribe(t, ctx, b, topic)
		errc := blockedNext(ctx, blocked)

		require.NoError(t, b.Close())
		assert.ErrorIs(t, <-errc, pubsub.ErrClosed, "Next blocked during broker Close")
		_, err := idle.Next(ctx)
		assert.ErrorIs(t, err, pubsub.ErrClosed, "Next after broker Close")
		_, err = b.Publish(ctx, msg(topic, 1))
		assert.ErrorIs(t, err, pubsub.ErrClosed, "Publish after broker Close")
		sub, err := b.Subscribe(ctx, topic)
		assert.ErrorIs(t, err, pubsub.ErrClosed, "Subscribe after broker Close")
		if sub != nil {
			_ = sub.Close()
		}
	})
}

// blockedNext calls Next in a goroutine and returns its error. The call has
// started, and most likely blocked, when blockedNext returns.
func blockedNext(ctx context.Context, sub pubsub.Subscription) <-chan error {
	started, errc := make(chan struct{}), make(chan error, 1)
	go func() {
		close(started)
		m, err := sub.Next(ctx)
		if err == nil {
			err = fmt.Errorf("got message %q on %q from Next, want an error", m.Data, m.Topic)
		}
		errc <- err
	}()
	<-started
	return errc
}

func (s *suite) testContext(t *testing.T) {
	t.Run("Next returns the error of its canceled context", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		sub := subscribe(t, ctx, b, topic)

		canceled, cancel := context.WithCancel(ctx)
		cancel()
		_, err := sub.Next(canceled)
		assert.ErrorIs(t, err, context.Canceled, "Next with a canceled context")

		callCtx, cancelCall := context.WithCancel(ctx)
		errc := blockedNext(callCtx, sub)
		cancelCall()
		assert.ErrorIs(t, <-errc, context.Canceled, "Next whose context was canceled while it waited")

		// Only the call ended, not the subscription.
		publish(t, ctx, b, topic, 1)
		expect(t, ctx, sub, 1)
	})

	t.Run("canceling the Subscribe context ends the subscription", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		subCtx, cancel := context.WithCancel(ctx)
		blocked, idle := subscribe(t, subCtx, b, topic), subscribe(t, subCtx, b, topic)
		errc := blockedNext(ctx, blocked)

		cancel()
		endedByCancel(t, <-errc, "Next blocked when the Subscribe context was canceled")
		_, err := idle.Next(ctx)
		endedByCancel(t, err, "Next after the Subscribe context was canceled")
	})
}

func endedByCancel(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, context.Canceled) && !errors.Is(err, pubsub.ErrClosed) {
		t.Errorf("%s: got error %v, want context.Canceled or pubsub.ErrClosed", what, err)
	}
}

func (s *suite) testOverflow(t *testing.T) {
	// overflowed subscribes slow with Buffer(4) and the policy, and a witness
	// with room; it publishes 1..10 and returns once the witness has them all,
	// so that slow has been offered them too.
	overflowed := func(t *testing.T, policy pubsub.Policy, opts ...pubsub.SubscribeOption) (ctx context.Context, b pubsub.Backend, topic string, slow pubsub.Subscription) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic = subject("t")
		slow = subscribe(t, ctx, b, topic, append([]pubsub.SubscribeOption{pubsub.Buffer(4), pubsub.Overflow(policy)}, opts...)...)
		witness := subscribe(t, ctx, b, topic)
		publish(t, ctx, b, topic, seq(1, 10)...)
		expect(t, ctx, witness, seq(1, 10)...)
		return ctx, b, topic, slow
	}

	t.Run("DropOldest keeps the newest", func(t *testing.T) {
		ctx, b, topic, slow := overflowed(t, pubsub.DropOldest)
		expect(t, ctx, slow, 7, 8, 9, 10)
		publish(t, ctx, b, topic, 11, 12)
		expect(t, ctx, slow, 11, 12)
		checkDropped(t, slow, 6)
	})

	t.Run("DropNewest keeps the oldest", func(t *testing.T) {
		ctx, b, topic, slow := overflowed(t, pubsub.DropNewest)
		expect(t, ctx, slow, 1, 2, 3, 4)
		publish(t, ctx, b, topic, 11, 12)
		expect(t, ctx, slow, 11, 12)
		checkDropped(t, slow, 6)
	})

	t.Run("Disconnect ends the subscription with ErrSlowConsumer", func(t *testing.T) {
		ctx, _, _, slow := overflowed(t, pubsub.Disconnect)
		// The buffered messages may come first; never a hole, so a prefix.
		got, err := readUntilErr(t, ctx, slow, 10)
		assert.ErrorIs(t, err, pubsub.ErrSlowConsumer, "after %v", got)
		assert.Equal(t, seq(1, len(got)), got, "messages before the error")
		_, err = slow.Next(ctx)
		assert.Error(t, err, "Next after ErrSlowConsumer")
	})

	t.Run("Disconnect then After the last cursor resumes without loss", func(t *testing.T) {
		s.needRetention(t)
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		slow := subscribe(t, ctx, b, topic, pubsub.Buffer(4), pubsub.Overflow(pubsub.Disconnect))
		witness := subscribe(t, ctx, b, topic)
		publish(t, ctx, b, topic, 0)
		last := expect(t, ctx, slow, 0)[0].Cursor
		publish(t, ctx, b, topic, seq(1, 10)...)
		expect(t, ctx, witness, seq(0, 10)...)

		var got []int
		for {
			m, err := slow.Next(ctx)
			if err != nil {
				require.ErrorIs(t, err, pubsub.ErrSlowConsumer, "after %v", got)
				break
			}
			got = append(got, index(m))
			last = m.Cursor
			require.LessOrEqual(t, len(got), 10, "no ErrSlowConsumer after %v", got)
		}
		resumed := subscribe(t, ctx, b, topic, pubsub.After(last))
		expect(t, ctx, resumed, seq(len(got)+1, 10)...)
		publish(t, ctx, b, topic, 11)
		expect(t, ctx, resumed, 11)
	})

	t.Run("Block loses nothing while the reader catches up", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		sub := subscribe(t, ctx, b, topic, pubsub.Buffer(4), pubsub.Overflow(pubsub.Block), pubsub.BlockTimeout(safetyNet))
		// From another goroutine: without FeedBlocks, Publish waits for this
		// reader once 4 are unread.
		_, done := publishAsync(ctx, b, func(int) string { return topic }, 1, 50)
		expect(t, ctx, sub, seq(1, 50)...)
		wait(t, ctx, done)
		checkDropped(t, sub, 0)
	})

	t.Run("Block holds Publish until the reader makes room", func(t *testing.T) {
		if s.opts.FeedBlocks {
			t.Skip("Block holds back the engine feed, not Publish (Options.FeedBlocks)")
		}
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		sub := subscribe(t, ctx, b, topic, pubsub.Buffer(4), pubsub.Overflow(pubsub.Block), pubsub.BlockTimeout(safetyNet))
		publish(t, ctx, b, topic, 1, 2, 3, 4) // fills the buffer without blocking

		published := make(chan error, 1)
		go func() {
			_, err := b.Publish(ctx, msg(topic, 5))
			published <- err
		}()
		// Let the publisher run as far as it can: a correct broker holds it
		// however long this takes; a broker that does not block is caught
		// here, most likely, instead of racing the read below. This only
		// yields the processor; it waits for nothing.
		for range 1000 {
			select {
			case err := <-published:
				t.Fatalf("Publish to a full Block subscription returned (%v) before the reader read", err)
			default:
				runtime.Gosched()
			}
		}
		expect(t, ctx, sub, 1)
		wait(t, ctx, published)
		expect(t, ctx, sub, 2, 3, 4, 5)
	})

	t.Run("Block gives up after BlockTimeout and ends the subscription", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		// Real time, unavoidably: only that Publish returns is asserted.
		slow := subscribe(t, ctx, b, topic, pubsub.Buffer(1), pubsub.Overflow(pubsub.Block), pubsub.BlockTimeout(50*time.Millisecond))
		other := subscribe(t, ctx, b, topic)
		publish(t, ctx, b, topic, 1, 2, 3)
		expect(t, ctx, other, 1, 2, 3)

		got, err := readUntilErr(t, ctx, slow, 3)
		assert.ErrorIs(t, err, pubsub.ErrSlowConsumer, "after %v", got)
		assert.Equal(t, seq(1, len(got)), got, "messages before the error")
	})

	for _, policy := range []pubsub.Policy{pubsub.DropOldest, pubsub.DropNewest, pubsub.Disconnect} {
		t.Run(fmt.Sprintf("%v subscriber that never reads holds back no one", policy), func(t *testing.T) {
			const n = 100
			ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
			topic := subject("t")
			subscribe(t, ctx, b, topic, pubsub.Buffer(4), pubsub.Overflow(policy))
			fast := subscribe(t, ctx, b, topic)
			publish(t, ctx, b, topic, seq(1, n)...)
			expect(t, ctx, fast, seq(1, n)...)
		})
	}
}

// checkDropped checks the drop count of a subscription that reports one.
func checkDropped(t *testing.T, sub pubsub.Subscription, want uint64) {
	t.Helper()
	d, ok := sub.(interface{ Dropped() uint64 })
	if !ok {
		t.Logf("%T has no Dropped method; not checking the count", sub)
		return
	}
	assert.Equal(t, want, d.Dropped(), "Dropped")
}

func (s *suite) testReplay(t *testing.T) {
	s.needRetention(t)

	t.Run("After a cursor replays then continues live without gap or duplicate", func(t *testing.T) {
		const k, j, m = 100, 40, 300
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		cs := publish(t, ctx, b, topic, seq(1, k)...)

		started, done := publishAsync(ctx, b, func(int) string { return topic }, k+1, k+m)
		<-started
		sub := subscribe(t, ctx, b, topic, pubsub.After(cs[j-1]), pubsub.Buffer(k+m))
		expect(t, ctx, sub, seq(j+1, k+m)...)
		wait(t, ctx, done)
		publish(t, ctx, b, topic, k+m+1)
		expect(t, ctx, sub, k+m+1)
	})

	t.Run("After a cursor with a wildcard replays every topic once", func(t *testing.T) {
		const k, j, m = 90, 40, 150
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topics := []string{subject("w", "t0"), subject("w", "t1"), subject("w", "t2")}
		var cursor pubsub.Cursor
		for i := 1; i <= k; i++ {
			c := publish(t, ctx, b, topics[i%len(topics)], i)[0]
			if i == j {
				cursor = c
			}
		}

		started, done := publishAsync(ctx, b, func(i int) string { return topics[i%len(topics)] }, k+1, k+m)
		<-started
		sub := subscribe(t, ctx, b, subject("w", "*"), pubsub.After(cursor), pubsub.Buffer(k+m))
		got, err := readN(ctx, sub, k+m-j)
		require.NoError(t, err)
		wait(t, ctx, done)
		checkPerTopicOrder(t, got, subject("w", "*"))
		require.Equal(t, seq(j+1, k+m), slices.Sorted(slices.Values(indexes(got))), "messages after the cursor, each once")

		// Nothing more is waiting: next come the messages published now.
		for _, topic := range topics {
			publish(t, ctx, b, topic, 0)
		}
		for _, m := range expect(t, ctx, sub, 0, 0, 0) {
			assert.Contains(t, topics, m.Topic)
		}
	})

	t.Run("After a cursor of another topic continues in broker order", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		a, other := subject("a"), subject("b")
		publish(t, ctx, b, a, 1)
		publish(t, ctx, b, other, 2)
		c := publish(t, ctx, b, a, 3)[0]
		publish(t, ctx, b, other, 4, 5)
		sub := subscribe(t, ctx, b, other, pubsub.After(c))
		expect(t, ctx, sub, 4, 5)
		publish(t, ctx, b, other, 6)
		expect(t, ctx, sub, 6)
	})

	t.Run("After the latest cursor delivers only new messages", func(t *testing.T) {
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		cs := publish(t, ctx, b, topic, 1, 2, 3)
		sub := subscribe(t, ctx, b, topic, pubsub.After(cs[2]))
		publish(t, ctx, b, topic, 4)
		expect(t, ctx, sub, 4)
	})

	t.Run("FromOldest replays everything retained then continues live", func(t *testing.T) {
		const k, m = 50, 150
		ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
		topic := subject("t")
		publish(t, ctx, b, topic, seq(1, k)...)

		started, done := publishAsync(ctx, b, func(int) string { return topic }, k+1, k+m)
		<-started
		sub := subscribe(t, ctx, b, topic, pubsub.FromOldest(), pubsub.Buffer(k+m))
		expect(t, ctx, sub, seq(1, k+m)...)
		wait(t, ctx, done)
		publish(t, ctx, b, topic, k+m+1)
		expect(t, ctx, sub, k+m+1)
	})
}

func (s *suite) testGap(t *testing.T) {
	s.needRetention(t)

	// foreign returns a well-formed cursor from another broker than b: one
	// minted by a second broker or, if that one shares b's epoch (one
	// engine), one with a made-up epoch.
	foreign := func(t *testing.T, ctx context.Context, b pubsub.Backend, topic string) pubsub.Cursor {
		t.Helper()
		mine := publish(t, ctx, b, topic+"-probe", 0)[0]
		theirs := publish(t, ctx, s.open(t), topic+"-probe", 0)[0]
		myEpoch, _, err := mine.Parse()
		require.NoError(t, err, "cursor %q", mine)
		epoch, p, err := theirs.Parse()
		require.NoError(t, err, "cursor %q", theirs)
		if epoch == myEpoch {
			epoch = otherEpoch(epoch)
		}
		return pubsub.MakeCursor(epoch, p)
	}

	for _, tt := range []struct {
		name  string
		onGap pubsub.GapPolicy
	}{
		{"cursor from another broker reports ErrGap then resumes from oldest", pubsub.ResumeFromOldest},
		{"cursor from another broker reports ErrGap then resumes from now", pubsub.ResumeFromNow},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
			topic := subject("t")
			c := foreign(t, ctx, b, topic)
			publish(t, ctx, b, topic, 1, 2, 3)

			sub := subscribe(t, ctx, b, topic, pubsub.After(c), pubsub.OnGap(tt.onGap))
			checkGap(t, ctx, sub, c, "epoch")
			if tt.onGap == pubsub.ResumeFromOldest {
				expect(t, ctx, sub, 1, 2, 3)
			}
			publish(t, ctx, b, topic, 4)
			expect(t, ctx, sub, 4)
		})
	}

	// Trimmed history: a broker keeping the last 4 of each topic, after
	// 1..10 were published, holds 7..10.
	trimmed := func(t *testing.T) (context.Context, pubsub.Backend, string, []pubsub.Cursor) {
		t.Helper()
		if s.opts.NewSmallHistory == nil {
			t.Skip("Options.NewSmallHistory is nil")
		}
		ctx, b, subject := safetyCtx(t), closeAtEnd(t, s.opts.NewSmallHistory(t, 4)), subjects(t)
		topic := subject("t")
		return ctx, b, topic, publish(t, ctx, b, topic, seq(1, 10)...)
	}

	t.Run("trimmed cursor reports ErrGap then resumes from oldest", func(t *testing.T) {
		ctx, b, topic, cs := trimmed(t)
		sub := subscribe(t, ctx, b, topic, pubsub.After(cs[0]), pubsub.OnGap(pubsub.ResumeFromOldest))
		checkGap(t, ctx, sub, cs[0], "trimmed")
		expect(t, ctx, sub, 7, 8, 9, 10)
		publish(t, ctx, b, topic, 11)
		expect(t, ctx, sub, 11)
	})

	t.Run("trimmed cursor reports ErrGap then resumes from now", func(t *testing.T) {
		ctx, b, topic, cs := trimmed(t)
		sub := subscribe(t, ctx, b, topic, pubsub.After(cs[0]), pubsub.OnGap(pubsub.ResumeFromNow))
		checkGap(t, ctx, sub, cs[0], "trimmed")
		publish(t, ctx, b, topic, 11)
		expect(t, ctx, sub, 11)
	})

	t.Run("cursor just before the retained history has no gap", func(t *testing.T) {
		ctx, b, topic, cs := trimmed(t)
		sub := subscribe(t, ctx, b, topic, pubsub.After(cs[5])) // message 6, trimmed; 7 is retained
		expect(t, ctx, sub, 7, 8, 9, 10)
		publish(t, ctx, b, topic, 11)
		expect(t, ctx, sub, 11)
	})

	t.Run("cursor two before the retained history reports ErrGap", func(t *testing.T) {
		ctx, b, topic, cs := trimmed(t)
		sub := subscribe(t, ctx, b, topic, pubsub.After(cs[4])) // message 5; 6 is gone
		checkGap(t, ctx, sub, cs[4], "trimmed")
		expect(t, ctx, sub, 7, 8, 9, 10) // ResumeFromOldest, the default
	})

	t.Run("FromOldest after trimming starts at the oldest retained without a gap", func(t *testing.T) {
		ctx, b, topic, _ := trimmed(t)
		sub := subscribe(t, ctx, b, topic, pubsub.FromOldest())
		expect(t, ctx, sub, 7, 8, 9, 10)
	})
}

// checkGap requires the next Next to report a gap after cursor c.
func checkGap(t *testing.T, ctx context.Context, sub pubsub.Subscription, c pubsub.Cursor, reason string) {
	t.Helper()
	m, err := sub.Next(ctx)
	require.ErrorIs(t, err, pubsub.ErrGap, "first Next after %q; got message %q", c, m.Data)
	var ge *pubsub.GapError
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, c, ge.After, "GapError.After")
	assert.Equal(t, reason, ge.Reason, "GapError.Reason")
}

// otherEpoch returns an epoch of the same shape as e but different: its last
// character moved on within its class (digit, lower or upper case letter).
func otherEpoch(e string) string {
	if e == "" {
		return "x"
	}
	b := []byte(e)
	c := &b[len(b)-1]
	switch {
	case *c >= '0' && *c <= '9':
		*c = '0' + (*c-'0'+1)%10
	case *c >= 'a' && *c <= 'z':
		*c = 'a' + (*c-'a'+1)%26
	case *c >= 'A' && *c <= 'Z':
		*c = 'A' + (*c-'A'+1)%26
	default:
		return e + "x"
	}
	return string(b)
}

func (s *suite) testNoLeaks(t *testing.T) {
	// Checked after every cleanup, the backend's own included, has run.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	ctx, b, subject := safetyCtx(t), s.open(t), subjects(t)
	topic := subject("t")
	closed := subscribe(t, ctx, b, topic)
	subCtx, cancel := context.WithCancel(ctx)
	canceled := subscribe(t, subCtx, b, topic)
	blocked := subscribe(t, ctx, b, subject("quiet"))
	dropping := subscribe(t, ctx, b, topic, pubsub.Buffer(1), pubsub.Overflow(pubsub.DropOldest))
	blocking := subscribe(t, ctx, b, topic, pubsub.Buffer(100), pubsub.Overflow(pubsub.Block))
	replaying := subscribe(t, ctx, b, topic, pubsub.FromOldest())

	publish(t, ctx, b, topic, seq(1, 10)...)
	expect(t, ctx, closed, seq(1, 10)...)
	expect(t, ctx, canceled, 1)
	expect(t, ctx, blocking, 1)
	expect(t, ctx, replaying, 1)
	errc := blockedNext(ctx, blocked)

	require.NoError(t, closed.Close())
	cancel()
	// The end of the context may take effect after some buffered messages.
	_, err := readUntilErr(t, ctx, canceled, 9)
	endedByCancel(t, err, "Next after the Subscribe context was canceled")
	require.NoError(t, dropping.Close())
	require.NoError(t, b.Close())
	assert.ErrorIs(t, <-errc, pubsub.ErrClosed)
}

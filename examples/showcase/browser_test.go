package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/internal/browsertest"
	"github.com/switchboard-go/switchboard/internal/enginetest"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pgpubsub"
	"github.com/switchboard-go/switchboard/queue/pgqueue"
)

// The browser tests drive every panel of the page in headless Chromium as
// a person would: once on memory (one showcase, two browser contexts), and
// once per engine with two showcases sharing it (one browser context on
// each).

func TestBrowserMemory(t *testing.T) {
	browsertest.Path(t)
	cfg := testConfig(t)
	a := startNode(t, cfg, "127.0.0.1:0")
	drive(t, a, a)
}

func TestBrowserPostgres(t *testing.T) {
	browsertest.Path(t)
	cfg := testConfig(t)
	cfg.postgres = enginetest.PostgresURL(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if db, err := pgxpool.New(ctx, cfg.postgres); err == nil {
			_ = pgpubsub.DropNamespace(ctx, db, pgNamespace(cfg.namespace))
			_ = pgqueue.DropNamespace(ctx, db, queueNamespace(cfg.namespace))
			db.Close()
		}
	})
	drive(t, startNode(t, cfg, "127.0.0.1:0"), startNode(t, cfg, "127.0.0.1:0"))
}

func TestBrowserRedis(t *testing.T) {
	browsertest.Path(t)
	cfg := testConfig(t)
	cfg.redis = enginetest.RedisURL(t)
	t.Cleanup(func() {
		opt, err := redis.ParseURL(cfg.redis)
		if err != nil {
			return
		}
		c := redis.NewClient(opt)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := c.Scan(ctx, 0, "{"+cfg.namespace+"}:*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
	})
	drive(t, startNode(t, cfg, "127.0.0.1:0"), startNode(t, cfg, "127.0.0.1:0"))
}

func TestBrowserNATS(t *testing.T) {
	browsertest.Path(t)
	cfg := testConfig(t)
	cfg.nats = enginetest.NATSURL(t)
	t.Cleanup(func() {
		nc, err := nats.Connect(cfg.nats)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, cfg.namespace)
		qns := queueNamespace(cfg.namespace)
		for _, s := range []string{"_work", "_delay", "_dead"} {
			_ = js.DeleteStream(ctx, qns+s)
		}
		for _, b := range []string{"_ctl", "_err"} {
			_ = js.DeleteKeyValue(ctx, qns+b)
		}
	})
	drive(t, startNode(t, cfg, "127.0.0.1:0"), startNode(t, cfg, "127.0.0.1:0"))
}

// testConfig is a fast showcase in a namespace of its own.
func testConfig(t *testing.T) config {
	cfg, err := config{
		namespace: "showcase_" + strings.ToLower(rand.Text()[:10]),
		jobStep:   100 * time.Millisecond,
		workDelay: 10 * time.Millisecond,
		sseRetry:  200 * time.Millisecond,
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// node is one showcase: an engine connection and an HTTP server on it.
type node struct {
	t    *testing.T
	cfg  config
	eng  *engine
	srv  *server
	addr string
}

// startNode opens an engine and serves a showcase on addr, both closed
// when the test ends.
func startNode(t *testing.T, cfg config, addr string) *node {
	t.Helper()
	n := &node{t: t, cfg: cfg}
	cfg.node = "node-" + strings.ToLower(rand.Text()[:4])
	n.cfg = cfg
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	eng, err := openEngine(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.eng = eng
	n.serve(addr)
	t.Cleanup(n.stop)
	return n
}

func (n *node) serve(addr string) {
	n.t.Helper()
	srv, err := newServer(n.cfg, n.eng, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		n.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = srv.shutdown(context.Background())
		n.t.Fatal(err)
	}
	srv.start(ln)
	n.srv, n.addr = srv, ln.Addr().String()
}

// shutdownServer shuts the HTTP server down gracefully, keeping the engine.
func (n *node) shutdownServer() {
	n.t.Helper()
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.shutdown(ctx); err != nil {
		n.t.Errorf("shutdown: %v", err)
	}
	n.srv = nil
}

func (n *node) stop() {
	n.shutdownServer()
	if n.eng != nil {
		if err := n.eng.close(); err != nil {
			n.t.Errorf("closing the engine: %v", err)
		}
		n.eng = nil
	}
}

// restart stops the node's HTTP server and serves a new one on the same
// address. On an engine the process's engine connection goes too, as in
// a process restart; on memory the broker must stay, or history would go.
func (n *node) restart(duringDowntime func()) {
	n.t.Helper()
	n.shutdownServer()
	if n.eng.name != "memory" {
		if err := n.eng.close(); err != nil {
			n.t.Errorf("closing the engine: %v", err)
		}
		n.eng = nil
	}
	duringDowntime()
	if n.eng == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		eng, err := openEngine(ctx, n.cfg)
		if err != nil {
			n.t.Fatal(err)
		}
		n.eng = eng
	}
	n.serve(n.addr)
}

func (n *node) url(name string) string { return "http://" + n.addr + "/?name=" + name }

// drive runs the person's script: ann's page on a, bob's on b (the same
// node on memory, two nodes sharing the engine otherwise).
func drive(t *testing.T, a, b *node) {
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	allocCtx, allocCancel := browsertest.Allocator(ctx, t, chromedp.WindowSize(1500, 1250))
	defer allocCancel()
	ann, annCancel := chromedp.NewContext(allocCtx)
	defer annCancel()
	act(t, ann, chromedp.Navigate(a.url("ann"))) // starts the browser
	// Bob gets a browser context of his own: his own cookies and
	// connection pool, as a second person's browser.
	bob, bobCancel := chromedp.NewContext(ann, chromedp.WithNewBrowserContext())
	defer bobCancel()
	act(t, bob, chromedp.Navigate(b.url("bob")))
	for _, p := range []context.Context{ann, bob} {
		waitFor(t, p, `window.ready && window.sseOpens >= 1 && window.lpCursor !== undefined`)
		waitFor(t, p, `window.presence.includes("ann") && window.presence.includes("bob")`)
	}

	t.Run("request: a bad value shows its error next to the field", func(t *testing.T) {
		act(t, ann, chromedp.SetValue(chromedp.ID("bk-name"), "ann"))
		act(t, ann, chromedp.SetValue(chromedp.ID("bk-minutes"), "7"))
		act(t, ann, chromedp.Click(chromedp.ID("bk-submit")))
		waitFor(t, ann, `document.getElementById("err-minutes").textContent.includes("multiple of 15")`)
		if got := eval[string](t, ann, `document.getElementById("err-name").textContent`); got != "" {
			t.Errorf("the valid name shows an error: %q", got)
		}
		act(t, ann, chromedp.SetValue(chromedp.ID("bk-minutes"), "30"))
		act(t, ann, chromedp.Click(chromedp.ID("bk-submit")))
		waitFor(t, ann, `document.getElementById("bk-result").textContent.startsWith("201 booked atlas")`)
		waitFor(t, ann, `document.getElementById("err-minutes").textContent === ""`)
		// The feed of bob's page (on the other node, with an engine) has it.
		waitFor(t, bob, `window.feed.some(e => e.text === "ann booked atlas for 30 minutes")`)
	})

	t.Run("push: chat between two browsers, to everyone and to one", func(t *testing.T) {
		act(t, ann, chromedp.SetValue(chromedp.ID("chat-text"), "hello everyone"))
		act(t, ann, chromedp.Click(chromedp.ID("chat-send")))
		waitFor(t, bob, `window.chat.includes("ann: hello everyone")`)
		waitFor(t, ann, `window.chat.includes("ann: hello everyone")`)
		act(t, bob, chromedp.SetValue(chromedp.ID("chat-to"), "ann"))
		act(t, bob, chromedp.SetValue(chromedp.ID("chat-text"), "psst"))
		act(t, bob, chromedp.Click(chromedp.ID("chat-send")))
		waitFor(t, ann, `window.chat.includes("bob → ann: psst")`)
		waitFor(t, bob, `window.chat.includes("bob → ann: psst")`)
	})

	t.Run("short polling: start a job, watch it move, cancel it", func(t *testing.T) {
		act(t, ann, chromedp.SetValue(chromedp.ID("job-steps"), "100"))
		act(t, ann, chromedp.Click(chromedp.ID("job-start")))
		waitFor(t, ann, `window.jobProgress > 0 && window.jobStatus === "running"`)
		act(t, ann, chromedp.Click(chromedp.ID("job-cancel")))
		waitFor(t, ann, `window.jobStatus === "canceled"`)
		// Started on a, seen in the feed on b.
		waitFor(t, bob, `window.feed.some(e => /^job \w+ started$/.test(e.text)) && window.feed.some(e => /^job \w+ canceled$/.test(e.text))`)
	})

	t.Run("queue: fill the dead-letter queue, fix, redrive", func(t *testing.T) {
		before := eval[float64](t, ann, `window.queueStats.processed`)
		act(t, ann, chromedp.SetValue(chromedp.ID("q-count"), "40"))
		act(t, ann, chromedp.SetValue(chromedp.ID("q-fail"), "25"))
		act(t, ann, chromedp.Click(chromedp.ID("q-enqueue")))
		waitFor(t, ann, fmt.Sprintf(`window.queueStats.dead === 10 && window.queueStats.processed === %v && window.queueStats.depth === 0`, before+30))
		waitFor(t, ann, `document.getElementById("q-deadlist").textContent.includes("the consumer has a bug")`)
		act(t, ann, chromedp.Click(chromedp.ID("q-fix")))
		waitFor(t, ann, `window.consumerFixed === true`)
		waitFor(t, bob, `window.consumerFixed === true`) // the fix reached every node
		act(t, ann, chromedp.Click(chromedp.ID("q-redrive")))
		waitFor(t, ann, fmt.Sprintf(`window.queueStats.dead === 0 && window.queueStats.processed === %v`, before+40))
	})

	t.Run("pubsub: publish and see which wildcards matched", func(t *testing.T) {
		act(t, ann, chromedp.SetValue(chromedp.ID("ps-subject"), "orders.eu.created"))
		act(t, ann, chromedp.Click(chromedp.ID("ps-publish")))
		matched := `[...document.querySelectorAll("#ps-patterns tr.matched")].map(r => r.dataset.pattern).sort().join(" ")`
		waitFor(t, ann, matched+` === "*.eu.> orders.*.created orders.> orders.eu.*"`)
		if got := eval[string](t, ann, matched); strings.Contains(got, "payments") {
			t.Errorf("matched %q: payments.> must not match orders.eu.created", got)
		}
	})

	t.Run("long polling: the same activity, with its cursor", func(t *testing.T) {
		waitFor(t, ann, `window.lpSeen.includes("ann booked atlas for 30 minutes") && window.lpSeen.includes("ann to everyone: hello everyone")`)
		waitFor(t, ann, `document.getElementById("lp-cursor").textContent === window.lpCursor && window.lpCursor.includes(".")`)
	})

	t.Run("sse: the feed survives a restart of the server without a gap", func(t *testing.T) {
		tick := func(broker pubsub.Publisher, from, to int) {
			for i := from; i <= to; i++ {
				body, _ := json.Marshal(activity{Kind: "tick", Node: "test", Text: fmt.Sprintf("tick %d", i)})
				if _, err := broker.Publish(ctx, pubsub.Message{Topic: "activity.tick", Data: body}); err != nil {
					t.Fatal(err)
				}
			}
		}
		tick(a.eng.broker, 1, 5)
		waitFor(t, ann, `window.feed.some(e => e.text === "tick 5")`)
		a.restart(func() {
			// While ann's server is down, the activity goes on: through the
			// kept broker on memory, through the other node on an engine.
			tick(b.eng.broker, 6, 10)
			if a == b {
				return
			}
			waitFor(t, bob, `window.feed.some(e => e.text === "tick 10")`)
		})
		waitFor(t, ann, `window.sseOpens >= 2`)
		tick(a.eng.broker, 11, 15)
		waitFor(t, ann, `window.feed.some(e => e.text === "tick 15")`)
		got := eval[[]string](t, ann, `window.feed.filter(e => e.kind === "tick").map(e => e.text)`)
		var want []string
		for i := 1; i <= 15; i++ {
			want = append(want, fmt.Sprintf("tick %d", i))
		}
		if !slices.Equal(got, want) {
			t.Errorf("the feed shows\n%q\nwant, in order and once each,\n%q", got, want)
		}
		// The other panels came back too: the chat, and the long-poll feed,
		// which carries on from its cursor across the restart.
		waitFor(t, ann, `document.getElementById("chat-status").textContent === "connected"`)
		waitFor(t, ann, `window.lpSeen.includes("tick 15")`)
	})

	// A screenshot for the README and for people: with the chart drawn.
	eval[bool](t, ann, `window.scrollTo(0, 0) === undefined`)
	png, err := chromedp.Run(ann, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "showcase.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	if os.Getenv("SHOWCASE_SCREENSHOTS") != "" {
		_ = os.WriteFile(filepath.Join(os.Getenv("SHOWCASE_SCREENSHOTS"), "showcase-"+a.eng.name+".png"), png, 0o644)
	}

	// Close the browser before the servers, which wait for its connections.
	if err := chromedp.Cancel(bob); err != nil {
		t.Errorf("closing the second browser context: %v", err)
	}
	if err := chromedp.Cancel(ann); err != nil {
		t.Errorf("closing the browser: %v", err)
	}
}

func act(t *testing.T, ctx context.Context, a chromedp.Action[chromedp.Void]) {
	t.Helper()
	if _, err := chromedp.Run(ctx, a); err != nil {
		t.Fatal(err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor polls the page until expr is true, failing the test after a
// generous deadline (the test's context bounds it too).
func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(20*time.Second),
	)); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}

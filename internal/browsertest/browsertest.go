// Package browsertest runs the browser tests' headless Chromium with the
// flags this project's machines need, under one rule for a missing browser:
// skip on a laptop, fail under CI=true (where a skip would hide that
// nothing ran). It also has Cutter, which ends a streaming request in
// flight so a test can watch the page reconnect by itself.
package browsertest

import (
	"context"
	"net/http"
	"os/exec"
	"slices"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-go/switchboard/internal/enginetest"
)

// Path returns the Chromium executable, skipping t when there is none
// (failing it under CI=true).
func Path(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if enginetest.InCI() {
		t.Fatal("no chromium or chromium-browser in PATH; CI must have one (apt-get install chromium)")
	}
	t.Skip("no chromium or chromium-browser in PATH: install Chromium to run the browser test")
	return ""
}

// Allocator returns a chromedp allocator for headless Chromium (see Path)
// with a fresh profile under t.TempDir(), and what ends it. The flags keep
// Chromium off the network: on this closed network its background requests
// are refused, and as root it needs --no-sandbox.
func Allocator(ctx context.Context, t testing.TB, extra ...chromedp.ExecAllocatorOption) (context.Context, context.CancelFunc) {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Path(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}, extra...)
	return chromedp.NewExecAllocator(ctx, opts...)
}

// Cutter wraps a streaming handler (an event stream, a WebSocket) so that a
// test can end the request in flight, as a dropped connection would, and
// hold the page's reconnect until it is ready for it.
type Cutter struct {
	Handler http.Handler

	mu       sync.Mutex
	headers  []http.Header      // of every request, in order; guarded by mu
	cancel   context.CancelFunc // ends the request in flight; guarded by mu
	returned chan struct{}      // closed when its handler returns; guarded by mu
	gate     chan struct{}      // when not nil, requests wait for it; guarded by mu
}

func (c *Cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.headers = append(c.headers, r.Header.Clone())
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	returned := make(chan struct{})
	defer close(returned)
	c.mu.Lock()
	c.cancel, c.returned = cancel, returned
	c.mu.Unlock()
	c.Handler.ServeHTTP(w, r.WithContext(ctx))
}

// Cut ends the request in flight, waits until its handler has returned, and
// holds the next request until release is called.
func (c *Cutter) Cut(t testing.TB, ctx context.Context) (release func()) {
	t.Helper()
	c.mu.Lock()
	cancel, returned := c.cancel, c.returned
	gate := make(chan struct{})
	c.gate = gate
	c.mu.Unlock()
	if cancel == nil {
		t.Fatal("no request in flight to cut")
	}
	cancel()
	select {
	case <-returned:
	case <-ctx.Done():
		t.Fatal("the handler did not return after its request was cut")
	}
	return func() {
		c.mu.Lock()
		c.gate = nil
		c.mu.Unlock()
		close(gate)
	}
}

// Header returns the values of the header key of every request so far, in
// order ("" where a request had none).
func (c *Cutter) Header(key string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.headers))
	for _, h := range c.headers {
		out = append(out, h.Get(key))
	}
	return slices.Clip(out)
}

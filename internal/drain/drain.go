// Package drain tracks the requests a handler has in flight, so that its
// Shutdown can refuse new ones and wait for the rest. Unlike a
// sync.WaitGroup, entering after Close is refused rather than racing with
// Wait, and Wait takes a context and needs no goroutine.
package drain

import (
	"context"
	"sync"
)

// Group counts what is in flight. The zero value is ready to use.
type Group struct {
	mu     sync.Mutex
	closed bool          // guarded by mu
	n      int           // in flight; guarded by mu
	idle   chan struct{} // closed when n drops to 0, for Wait; guarded by mu
}

// Enter counts one more in flight and reports true, or reports false after
// Close. Every true must be matched by a Leave.
func (g *Group) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

// Leave counts one fewer in flight.
func (g *Group) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// Close refuses every later Enter.
func (g *Group) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
}

// Closed reports whether Close was called.
func (g *Group) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Wait waits until nothing is in flight, or returns ctx.Err() when ctx ends
// first. Call it after Close, or it may return while new work enters.
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return nil
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

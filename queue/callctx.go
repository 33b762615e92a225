package queue

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// callContext is the context of one handler call. Most handlers never ask
// it whether it has ended, so it costs one small allocation until they do:
// the cancellable context the standard library makes (registered with its
// parent, and unregistered when it ends) is made only when the handler
// calls Done, when a derived context needs it, or when the call is ended
// for a cause (a timeout, a lost lease, a stopping worker), so that
// context.Cause reports that cause. Err needs no context made: it reads
// the call's state and its parent's.
type callContext struct {
	parent context.Context
	made   atomic.Pointer[madeContext]
	ended  atomic.Bool // the call ended, or its context was cancelled

	mu    sync.Mutex // serializes making and ending
	cause error      // why it ended; guarded by mu
}

type madeContext struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

var _ context.Context = (*callContext)(nil)

func newCallContext(parent context.Context) *callContext {
	return &callContext{parent: parent}
}

// get returns the cancellable context, making it on first use.
func (c *callContext) get() *madeContext {
	if m := c.made.Load(); m != nil {
		return m
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.makeLocked()
}

func (c *callContext) makeLocked() *madeContext {
	if m := c.made.Load(); m != nil {
		return m
	}
	ctx, cancel := context.WithCancelCause(c.parent)
	if c.ended.Load() {
		cancel(c.cause)
	}
	m := &madeContext{ctx, cancel}
	c.made.Store(m)
	return m
}

func (c *callContext) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *callContext) Done() <-chan struct{} { return c.get().ctx.Done() }

func (c *callContext) Err() error {
	if m := c.made.Load(); m != nil {
		return m.ctx.Err()
	}
	if c.ended.Load() {
		return context.Canceled
	}
	return c.parent.Err()
}

// Value looks key up in the made context once there is one, so that
// context.Cause finds the call's own cause; before, the parent's values
// are the call's.
func (c *callContext) Value(key any) any {
	if m := c.made.Load(); m != nil {
		return m.ctx.Value(key)
	}
	return c.parent.Value(key)
}

// cancel ends the context with cause; the first call wins. A cause other
// than nil makes the cancellable context, so that the handler (and
// context.Cause) sees it.
func (c *callContext) cancel(cause error) {
	c.mu.Lock()
	if c.ended.Load() {
		c.mu.Unlock()
		return
	}
	if cause == nil {
		cause = context.Canceled
	}
	c.cause = cause
	c.ended.Store(true)
	m := c.made.Load()
	if m == nil && cause != context.Canceled {
		m = c.makeLocked() // made cancelled
	}
	c.mu.Unlock()
	if m != nil {
		m.cancel(cause)
	}
}

// Cause returns why the context ended: the cause given to cancel, else
// the parent's cause if it ended, else nil.
func (c *callContext) Cause() error {
	c.mu.Lock()
	cause := c.cause
	c.mu.Unlock()
	if cause != nil {
		return cause
	}
	if m := c.made.Load(); m != nil {
		return context.Cause(m.ctx)
	}
	return context.Cause(c.parent)
}

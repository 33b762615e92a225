package request

import (
	"errors"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
)

// ErrBudgetExhausted is joined to a call's last error when a retry was due
// but the retry budget had no token left: the failure is general enough
// that retrying would only add load.
var ErrBudgetExhausted = errors.New("request: retry budget exhausted")

// Defaults of BudgetOptions.
const (
	DefaultBudgetRatio     = 0.1
	DefaultBudgetPerSecond = 1.0
	DefaultBudgetMax       = 10.0
)

// BudgetOptions configures NewBudget. Zero fields mean the defaults.
type BudgetOptions struct {
	// Ratio is the tokens each call adds: 0.1 (the default) lets retries
	// be at most a tenth of calls once the bucket is drained, so a failing
	// server sees 1.1 times its normal load, not MaxAttempts times.
	Ratio float64
	// PerSecond is the tokens added per second whatever the traffic, so a
	// quiet client can still retry. Default 1.
	PerSecond float64
	// Max is the bucket's size, and what it starts with. Default 10.
	Max float64
	// Clock times the refill. Default the real clock.
	Clock clock.Clock
}

// Budget is a token bucket that bounds retries: each retry takes one
// token; calls and time put tokens back. Share one Budget among the
// clients of one service to bound their retries together. It is safe for
// concurrent use.
type Budget struct {
	ratio, perSecond, max float64
	clock                 clock.Clock

	mu     sync.Mutex
	tokens float64   // guarded by mu
	last   time.Time // when tokens was last refilled; guarded by mu
}

// NewBudget returns a full Budget. A nil opts means the defaults.
func NewBudget(opts *BudgetOptions) *Budget {
	var o BudgetOptions
	if opts != nil {
		o = *opts
	}
	if o.Ratio <= 0 {
		o.Ratio = DefaultBudgetRatio
	}
	if o.PerSecond <= 0 {
		o.PerSecond = DefaultBudgetPerSecond
	}
	if o.Max <= 0 {
		o.Max = DefaultBudgetMax
	}
	c := clock.Or(o.Clock)
	return &Budget{ratio: o.Ratio, perSecond: o.PerSecond, max: o.Max, clock: c, tokens: o.Max, last: c.Now()}
}

// Tokens reports how many retries the budget would allow now.
func (b *Budget) Tokens() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	return b.tokens
}

func (b *Budget) refill() {
	now := b.clock.Now()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.max, b.tokens+el.Seconds()*b.perSecond)
	}
	b.last = now
}

// deposit credits one call. It leaves the time's refill to the next
// withdraw or Tokens, which gives the same count (both only add, up to
// max) without reading the clock on every call.
func (b *Budget) deposit() {
	b.mu.Lock()
	b.tokens = min(b.max, b.tokens+b.ratio)
	b.mu.Unlock()
}

// withdraw takes a token for a retry, reporting false when there is none.
func (b *Budget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Package backoff computes how long to wait before retrying a failed
// operation: capped exponential backoff with "full jitter", as described in
// the AWS Architecture Blog post "Exponential Backoff And Jitter".
//
// Before retry number attempt (0 for the first retry) the wait is a random
// duration in [0, min(Max, Base*Multiplier^attempt)]. Full jitter spreads
// retrying clients over the whole window, so many clients that failed
// together (a restarted server, a dropped broker) do not come back together.
//
// The entry points:
//
//   - [Policy.Delay] for code that schedules the retry itself (a queue
//     setting a message's next visibility, a client honouring Retry-After
//     first).
//   - [Policy.Wait] to block for that delay on an injected [clock.Clock],
//     ending early when the context does.
//   - [Retrier] for the usual loop: call, and on failure Next waits, or
//     reports [ErrExhausted] once MaxAttempts is spent.
package backoff

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
)

// Defaults for the zero fields of a Policy.
const (
	DefaultBase       = 100 * time.Millisecond
	DefaultMax        = 30 * time.Second
	DefaultMultiplier = 2.0
)

// ErrExhausted is returned by Retrier.Next when the policy's MaxAttempts have
// all been made.
var ErrExhausted = errors.New("backoff: attempts exhausted")

// Policy describes a capped exponential backoff with full jitter. The zero
// value is a usable policy: 100ms doubling up to 30s, retrying forever.
//
// A Policy is a value; it is safe for concurrent use as long as Rand is.
type Policy struct {
	// Base is the ceiling of the first retry's delay. Zero or negative
	// means DefaultBase (100ms).
	Base time.Duration
	// Max caps every delay. Zero or negative means DefaultMax (30s).
	Max time.Duration
	// Multiplier is how much the ceiling grows per attempt. Values below 1
	// (including zero) mean DefaultMultiplier (2); 1 gives a constant
	// ceiling of Base.
	Multiplier float64
	// MaxAttempts bounds the total number of attempts, the first one
	// included, that a Retrier allows: 3 means one call and two retries.
	// Zero or negative means unlimited. Delay and Wait ignore it.
	MaxAttempts int
	// Rand returns a number in [0, 1); values outside are clamped. Nil
	// means math/rand/v2's Float64. Tests set it to make delays
	// deterministic.
	Rand func() float64
}

// Ceiling returns the upper bound of the delay before retry number attempt:
// min(Max, Base*Multiplier^attempt). A negative attempt counts as 0. It
// never overflows, however large attempt is.
func (p Policy) Ceiling(attempt int) time.Duration {
	base, maxDelay, mult := p.Base, p.Max, p.Multiplier
	if base <= 0 {
		base = DefaultBase
	}
	if maxDelay <= 0 {
		maxDelay = DefaultMax
	}
	if mult < 1 || math.IsNaN(mult) {
		mult = DefaultMultiplier
	}
	if attempt < 0 {
		attempt = 0
	}
	// Computed in float64: Pow saturates at +Inf instead of wrapping.
	c := float64(base) * math.Pow(mult, float64(attempt))
	if c >= float64(maxDelay) { // also catches +Inf
		return maxDelay
	}
	return time.Duration(c)
}

// Delay returns a random duration in [0, Ceiling(attempt)] to wait before
// retry number attempt (0 for the first retry). It is never negative and
// never more than Max.
func (p Policy) Delay(attempt int) time.Duration {
	c := p.Ceiling(attempt)
	r := p.rand()
	switch {
	case r > 0 && r < 1:
		// r < 1 keeps the product below 2^63 even when c is
		// math.MaxInt64, so the conversion cannot overflow.
		return time.Duration(r * float64(c))
	case r >= 1:
		return c
	default: // zero, negative or NaN
		return 0
	}
}

func (p Policy) rand() float64 {
	if p.Rand != nil {
		return p.Rand()
	}
	return rand.Float64()
}

// Wait blocks for Delay(attempt) on c (clock.Real when nil). It returns nil
// when the delay has passed, or ctx.Err() as soon as ctx ends, stopping its
// timer. A context that has already ended returns at once, even when the
// delay is zero.
func (p Policy) Wait(ctx context.Context, c clock.Clock, attempt int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := p.Delay(attempt)
	if d <= 0 {
		return nil
	}
	t := clock.Or(c).NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retrier paces the retries of one operation under a Policy. Its zero
// value is not usable; call NewRetrier. A Retrier is not safe for
// concurrent use: it belongs to the loop that retries.
//
//	r := backoff.NewRetrier(policy, clk)
//	for {
//		err := op(ctx)
//		if err == nil || !retryable(err) {
//			return err
//		}
//		if werr := r.Next(ctx); werr != nil {
//			return errors.Join(err, werr)
//		}
//	}
type Retrier struct {
	policy   Policy
	clock    clock.Clock
	attempts int // attempts made so far, the first call included
}

// NewRetrier returns a Retrier for p that waits on c (clock.Real when nil).
// It assumes the first attempt is about to be made.
func NewRetrier(p Policy, c clock.Clock) *Retrier {
	return &Retrier{policy: p, clock: clock.Or(c), attempts: 1}
}

// Next is called after a failed attempt. It returns ErrExhausted at once
// when MaxAttempts attempts have been made; otherwise it waits the delay
// for the next retry and returns nil, or returns ctx.Err() when ctx ends
// first (that retry is then not counted).
func (r *Retrier) Next(ctx context.Context) error {
	if m := r.policy.MaxAttempts; m > 0 && r.attempts >= m {
		return ErrExhausted
	}
	if err := r.policy.Wait(ctx, r.clock, r.attempts-1); err != nil {
		return err
	}
	r.attempts++
	return nil
}

// Attempts reports how many attempts have been allowed so far, the first
// one included.
func (r *Retrier) Attempts() int { return r.attempts }

// Reset starts the schedule over, as after a success: a reconnecting client
// calls it once a connection has been established.
func (r *Retrier) Reset() { r.attempts = 1 }

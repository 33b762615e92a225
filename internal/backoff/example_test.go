package backoff_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/internal/clock"
)

func ExamplePolicy_Ceiling() {
	p := backoff.Policy{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt := range 6 {
		fmt.Println(attempt, p.Ceiling(attempt))
	}
	// Output:
	// 0 100ms
	// 1 200ms
	// 2 400ms
	// 3 800ms
	// 4 1s
	// 5 1s
}

func ExampleRetrier() {
	errUnavailable := errors.New("unavailable")
	calls := 0
	op := func(context.Context) error {
		calls++
		return errUnavailable
	}

	// Rand returning 0 makes every delay zero, so the example runs at once;
	// production code leaves Rand nil and the clock Real.
	p := backoff.Policy{MaxAttempts: 3, Rand: func() float64 { return 0 }}
	r := backoff.NewRetrier(p, clock.Real{})
	ctx := context.Background()
	var err error
	for {
		if err = op(ctx); err == nil {
			break
		}
		if werr := r.Next(ctx); werr != nil {
			err = errors.Join(err, werr)
			break
		}
	}
	fmt.Println(calls, errors.Is(err, errUnavailable), errors.Is(err, backoff.ErrExhausted))
	// Output: 3 true true
}

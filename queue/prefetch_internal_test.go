package queue

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAdaptivePrefetchFollowsTheHandlers(t *testing.T) {
	p := prefetchLimit{n: 10, max: 100, adaptive: true}
	// Fast handlers run through what waits before each receive is back:
	// the limit doubles, up to its bound.
	for _, want := range []int{20, 40, 80, 100, 100} {
		p.observe(p.n, p.n, 0, 10)
		assert.Equal(t, want, p.n)
	}
	// Messages still waiting at the end of a receive: the limit holds.
	p.observe(100, 60, 40, 10)
	assert.Equal(t, 100, p.n)
	// Slow handlers finish less than an eighth of what they had during a
	// receive: the limit halves, down to none.
	for _, want := range []int{50, 25, 12, 6, 3, 1, 0, 0} {
		p.observe(110, 1, 100, 10)
		assert.Equal(t, want, p.n)
	}
	// From none, handlers that are fast again bring it back, starting from
	// the concurrency.
	p.observe(10, 10, 0, 10)
	assert.Equal(t, 10, p.n)
}

func TestFixedPrefetchDoesNotMove(t *testing.T) {
	p := prefetchLimit{n: 7, max: 7}
	p.observe(7, 7, 0, 10)
	p.observe(100, 0, 100, 10)
	assert.Equal(t, 7, p.n)
}

package ids

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestGeneratorCarriesIntoTheTimestampWhenRandomnessRunsOut(t *testing.T) {
	now := time.UnixMilli(1000)
	var g Generator
	first := g.ID(now)
	g.mu.Lock()
	g.hi = 1000<<16 | 0xFFFF
	g.lo = ^uint64(0)
	g.mu.Unlock()

	next := g.ID(now)
	assert.Less(t, first, next)
	got, err := Time(next)
	assert.NoError(t, err)
	assert.Equal(t, time.UnixMilli(1001).UTC(), got, "carried one millisecond ahead")
	assert.Equal(t, "00000000Z90000000000000000", next)
}

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

func TestAppendIDsMakesWhatAppendIDWould(t *testing.T) {
	now := time.UnixMilli(5000)
	var a, b Generator
	a.ID(now)
	b.ID(now)
	a.mu.Lock()
	b.mu.Lock()
	a.hi, a.lo = 5000<<16|7, ^uint64(0)-2 // the batch carries into hi
	b.hi, b.lo = a.hi, a.lo
	a.mu.Unlock()
	b.mu.Unlock()

	batch := string(a.AppendIDs(nil, now, 5))
	var one []byte
	for range 5 {
		one = b.AppendID(one, now)
	}
	assert.Equal(t, string(one), batch)
	assert.Equal(t, b.ID(now), a.ID(now), "both generators go on from the same id")
	assert.Empty(t, a.AppendIDs(nil, now, 0))
}

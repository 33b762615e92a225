package ids_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/ids"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func assertWellFormed(t *testing.T, id string) {
	t.Helper()
	require.Len(t, id, ids.Len, "id %q", id)
	_, err := ids.Parse(id)
	require.NoError(t, err, "id %q", id)
	assert.Equal(t, strings.ToUpper(id), id, "id %q is canonical upper case", id)
}

func TestNewIsWellFormedAndCarriesTheTime(t *testing.T) {
	before := time.Now().Truncate(time.Millisecond)
	id := ids.New()
	after := time.Now()
	assertWellFormed(t, id)

	got, err := ids.Time(id)
	require.NoError(t, err)
	assert.False(t, got.Before(before) || got.After(after), "Time(%q) = %v, want within [%v, %v]", id, got, before, after)
}

func TestNewIsUnique(t *testing.T) {
	seen := make(map[string]bool)
	for range 10_000 {
		id := ids.New()
		require.False(t, seen[id], "duplicate id %q", id)
		seen[id] = true
	}
}

func TestIDsSortByTimeAcrossMilliseconds(t *testing.T) {
	var g ids.Generator
	times := []time.Time{
		time.UnixMilli(0),
		time.UnixMilli(1),
		epoch,
		epoch.Add(time.Millisecond),
		epoch.Add(time.Hour),
		time.UnixMilli(1<<48 - 1),
	}
	var made []string
	for _, now := range times {
		for range 3 { // several generators' worth of randomness per time
			var fresh ids.Generator
			made = append(made, fresh.ID(now))
		}
		made = append(made, g.ID(now))
	}
	for i := 1; i < len(made); i++ {
		ti, _ := ids.Time(made[i])
		tp, _ := ids.Time(made[i-1])
		if ti.After(tp) {
			assert.Less(t, made[i-1], made[i], "ids at %v and %v", tp, ti)
		}
	}
}

func TestGeneratorIsMonotonicWithinOneMillisecond(t *testing.T) {
	var g ids.Generator
	prev := g.ID(epoch)
	for i := range 10_000 {
		// Sub-millisecond steps stay in the same millisecond.
		now := epoch.Add(time.Duration(i%1000) * time.Microsecond)
		id := g.ID(now)
		require.Less(t, prev, id, "id %d", i)
		got, err := ids.Time(id)
		require.NoError(t, err)
		require.Equal(t, epoch, got, "id %d keeps its millisecond", i)
		prev = id
	}
}

func TestGeneratorStaysMonotonicWhenTheClockStepsBack(t *testing.T) {
	var g ids.Generator
	later := g.ID(epoch.Add(time.Second))
	earlier := g.ID(epoch)
	assert.Less(t, later, earlier)
}

func TestGeneratorsDrawDifferentRandomness(t *testing.T) {
	var a, b ids.Generator
	assert.NotEqual(t, a.ID(epoch), b.ID(epoch))
}

func TestGeneratorIsUniqueUnderConcurrency(t *testing.T) {
	const workers, perWorker = 8, 10_000
	var g ids.Generator
	results := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			out := make([]string, 0, perWorker)
			for i := range perWorker {
				// A few distinct milliseconds, shared by all workers.
				out = append(out, g.ID(epoch.Add(time.Duration(i/1000)*time.Millisecond)))
			}
			results[w] = out
		})
	}
	wg.Wait()

	seen := make(map[string]bool, workers*perWorker)
	for w, out := range results {
		require.True(t, slices.IsSorted(out), "worker %d sees increasing ids", w)
		for _, id := range out {
			require.False(t, seen[id], "duplicate id %q", id)
			seen[id] = true
		}
	}
	assert.Len(t, seen, workers*perWorker)
}

func TestAppendIDAppends(t *testing.T) {
	var g ids.Generator
	out := g.AppendID([]byte("msg-"), epoch)
	require.True(t, strings.HasPrefix(string(out), "msg-"))
	assertWellFormed(t, string(out[4:]))
}

func TestAppendIDAllocatesNothing(t *testing.T) {
	var g ids.Generator
	buf := make([]byte, 0, ids.Len)
	g.AppendID(buf, epoch) // seed outside the measurement
	allocs := testing.AllocsPerRun(1000, func() {
		buf = g.AppendID(buf[:0], epoch)
	})
	assert.Zero(t, allocs)
}

func TestTimeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
		want time.Time
	}{
		{"truncates to the millisecond", epoch.Add(1234567 * time.Nanosecond), epoch.Add(time.Millisecond)},
		{"keeps a whole millisecond", epoch, epoch},
		{"Unix epoch", time.Unix(0, 0), time.Unix(0, 0).UTC()},
		{"before the Unix epoch clamps to it", time.Unix(-100, 0), time.Unix(0, 0).UTC()},
		{"largest time", time.UnixMilli(1<<48 - 1), time.UnixMilli(1<<48 - 1).UTC()},
		{"beyond the largest time clamps to it", time.UnixMilli(1 << 50), time.UnixMilli(1<<48 - 1).UTC()},
		{"any zone reads back in UTC", epoch.In(time.FixedZone("X", 3600)), epoch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g ids.Generator
			id := g.ID(tt.now)
			got, err := ids.Time(id)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "Time(%q) of an id made at %v", id, tt.now)
		})
	}
}

func TestParse(t *testing.T) {
	max := [16]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}
	tests := []struct {
		name    string
		give    string
		want    [16]byte
		wantErr bool
	}{
		{"zero", "00000000000000000000000000", [16]byte{}, false},
		{"largest", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", max, false},
		{"lower case", "7zzzzzzzzzzzzzzzzzzzzzzzzz", max, false},
		{"last digit", "0000000000000000000000000Z", [16]byte{15: 31}, false},
		{"empty", "", [16]byte{}, true},
		{"too short", "0000000000000000000000000", [16]byte{}, true},
		{"too long", "000000000000000000000000000", [16]byte{}, true},
		{"more than 128 bits", "80000000000000000000000000", [16]byte{}, true},
		{"letter outside the alphabet", "0000000000000000000000000U", [16]byte{}, true},
		{"ambiguous letter", "0000000000000000000000000I", [16]byte{}, true},
		{"punctuation", "000000000000-0000000000000", [16]byte{}, true},
		{"non-ASCII", "0000000000000000000000000\xff", [16]byte{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ids.Parse(tt.give)
			if tt.wantErr {
				assert.ErrorIs(t, err, ids.ErrInvalid, "Parse(%q)", tt.give)
				return
			}
			require.NoError(t, err, "Parse(%q)", tt.give)
			assert.Equal(t, tt.want, got, "Parse(%q)", tt.give)
		})
	}
}

func TestTimeMatchesTheULIDSpec(t *testing.T) {
	// The ULID specification's example timestamp.
	got, err := ids.Time("01ARYZ6S41TSV4RRFFQ69G5FAV")
	require.NoError(t, err)
	assert.Equal(t, int64(1469918176385), got.UnixMilli())

	_, err = ids.Time("not an id")
	assert.ErrorIs(t, err, ids.ErrInvalid)
}

func BenchmarkAppendID(b *testing.B) {
	var g ids.Generator
	buf := make([]byte, 0, ids.Len)
	now := epoch
	b.ReportAllocs()
	for b.Loop() {
		buf = g.AppendID(buf[:0], now)
	}
}

func BenchmarkAppendIDParallel(b *testing.B) {
	var g ids.Generator
	now := epoch
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, ids.Len)
		for pb.Next() {
			buf = g.AppendID(buf[:0], now)
		}
	})
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ids.New()
	}
}

package ids

import (
	crand "crypto/rand"
	"math/rand/v2"
	"sync"
	"time"
)

// Generator makes ids that are strictly increasing in the order it makes
// them, even within one millisecond. Its zero value is ready to use: it
// seeds a ChaCha8 generator from crypto/rand on first use, so making an id
// costs no system call. A Generator is safe for concurrent use and must not
// be copied after first use.
//
// In a new millisecond the 80-bit random part is drawn afresh. In the same
// millisecond as the previous id, or an earlier one (the wall clock stepped
// back), the id is the previous one plus one, so order never goes backwards;
// if the random part is ever exhausted the increment carries into the
// timestamp, which then runs at most a millisecond ahead.
type Generator struct {
	mu     sync.Mutex
	seeded bool         // guarded by mu
	rng    rand.ChaCha8 // guarded by mu
	hi, lo uint64       // the previous id: 48-bit ms and 16 random bits, 64 random bits; guarded by mu
}

// AppendID appends a new id for the time now to dst and returns the
// extended slice. It allocates nothing when dst has room for Len more
// bytes.
func (g *Generator) AppendID(dst []byte, now time.Time) []byte {
	return g.AppendIDs(dst, now, 1)
}

// AppendIDs appends n new ids for the time now to dst, the ids n calls of
// AppendID would make, under one lock: a batch pays for the lock once.
func (g *Generator) AppendIDs(dst []byte, now time.Time, n int) []byte {
	if n <= 0 {
		return dst
	}
	ms := millis(now)
	g.mu.Lock()
	fresh := ms > g.hi>>16
	if !g.seeded {
		var seed [32]byte
		crand.Read(seed[:]) // never fails (crypto/rand, Go 1.24+)
		g.rng.Seed(seed)
		g.seeded = true
		fresh = true
	}
	if fresh {
		g.hi = ms<<16 | g.rng.Uint64()&0xFFFF
		g.lo = g.rng.Uint64()
	} else {
		g.lo++
		if g.lo == 0 {
			g.hi++
		}
	}
	hi, lo := g.hi, g.lo
	// The batch is hi:lo and the n-1 values after it; the generator
	// remembers the last.
	g.lo += uint64(n - 1)
	if g.lo < lo {
		g.hi++
	}
	g.mu.Unlock()
	for range n {
		dst = encode(dst, hi, lo)
		lo++
		if lo == 0 {
			hi++
		}
	}
	return dst
}

// ID returns a new id for the time now.
func (g *Generator) ID(now time.Time) string {
	var buf [Len]byte
	return string(g.AppendID(buf[:0], now))
}

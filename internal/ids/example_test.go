package ids_test

import (
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/internal/ids"
)

func ExampleGenerator() {
	var g ids.Generator
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := g.ID(now)
	b := g.ID(now) // same millisecond: still after a
	t, _ := ids.Time(b)
	fmt.Println(len(a), a < b, t)
	// Output: 26 true 2026-01-02 03:04:05 +0000 UTC
}

package sse

import (
	"testing"
	"time"
)

func TestDelayGrowsWithJitterWithinBounds(t *testing.T) {
	c := &Client{MaxRetry: 8 * time.Second}
	if d := c.delay(time.Second, 0); d != time.Second {
		t.Fatalf("after a stream that worked: %v, want the retry delay", d)
	}
	if d := c.delay(time.Second, 1); d != time.Second {
		t.Fatalf("after one failure: %v, want the retry delay", d)
	}
	var longest time.Duration
	for range 1000 {
		d := c.delay(time.Second, 10)
		if d < time.Second || d > 8*time.Second {
			t.Fatalf("after 10 failures: %v, outside [1s, 8s]", d)
		}
		longest = max(longest, d)
	}
	if longest <= 2*time.Second {
		t.Fatalf("1000 delays after 10 failures never exceeded 2s (%v): no backoff", longest)
	}
}

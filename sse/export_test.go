package sse

import "github.com/switchboard-go/switchboard/internal/clock"

// SetClock lets tests drive a Client's reconnection delays.
func SetClock(c *Client, clk clock.Clock) { c.clock = clk }

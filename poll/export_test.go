package poll

import "github.com/switchboard-go/switchboard/internal/clock"

// SetJobClientClock lets tests drive a JobClient's waits.
func SetJobClientClock(c *JobClient, clk clock.Clock) { c.clock = clk }

// SetLongPollClientClock lets tests drive a LongPollClient's backoff.
func SetLongPollClientClock(c *LongPollClient, clk clock.Clock) { c.clock = clk }

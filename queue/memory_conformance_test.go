package queue_test

import (
	"testing"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/queue/queuetest"
)

func TestMemoryConformance(t *testing.T) {
	queuetest.Run(t, func(_ *testing.T, clk *clock.Fake) queue.Backend {
		opts := queue.MemoryOptions{}
		if clk != nil {
			opts.Clock = clk
		}
		return queue.NewMemory(opts)
	}, queuetest.Options{})
}

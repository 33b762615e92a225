package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/queue"
)

func TestMemoryBounds(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		opts queue.MemoryOptions
		run  func(t *testing.T, m *queue.Memory)
	}{
		{"a message over MaxMessageSize fails with ErrTooLarge", queue.MemoryOptions{MaxMessageSize: 4}, func(t *testing.T, m *queue.Memory) {
			_, err := m.Enqueue(ctx, "q", []queue.Message{{Body: []byte("12345")}})
			assert.ErrorIs(t, err, queue.ErrTooLarge)
		}},
		{"an enqueue past MaxDepth fails with ErrQueueFull and stores nothing", queue.MemoryOptions{MaxDepth: 2}, func(t *testing.T, m *queue.Memory) {
			_, err := m.Enqueue(ctx, "q", []queue.Message{{}, {}, {}})
			assert.ErrorIs(t, err, queue.ErrQueueFull)
			st, _ := m.Stats(ctx, "q")
			assert.Equal(t, 0, st.Depth)
		}},
		{"a queue past MaxQueues fails with ErrTooManyQueues", queue.MemoryOptions{MaxQueues: 1}, func(t *testing.T, m *queue.Memory) {
			_, err := m.Enqueue(ctx, "a", []queue.Message{{}})
			require.NoError(t, err)
			_, err = m.Enqueue(ctx, "b", []queue.Message{{}})
			assert.ErrorIs(t, err, queue.ErrTooManyQueues)
		}},
		{"at MaxDead the oldest dead letter is dropped and counted", queue.MemoryOptions{MaxDead: 2}, func(t *testing.T, m *queue.Memory) {
			res, err := m.Enqueue(ctx, "q", []queue.Message{{}, {}, {}})
			require.NoError(t, err)
			ds, err := m.Receive(ctx, "q", queue.ReceiveOptions{Max: 3, Lease: time.Minute})
			require.NoError(t, err)
			for _, d := range ds {
				require.NoError(t, m.DeadLetter(ctx, "q", d.Receipt, "x"))
			}
			dead, _, err := m.ListDead(ctx, "q", "", 10)
			require.NoError(t, err)
			require.Len(t, dead, 2)
			assert.Equal(t, res[1].ID, dead[0].ID)
			st, _ := m.Stats(ctx, "q")
			assert.Equal(t, uint64(1), st.DeadDropped)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := queue.NewMemory(tt.opts)
			defer m.Close()
			tt.run(t, m)
		})
	}
}

func TestQueueValidatesNames(t *testing.T) {
	m := queue.NewMemory(queue.MemoryOptions{})
	defer m.Close()
	for _, name := range []string{"", "a b", "a/b", strings.Repeat("x", queue.MaxNameLen+1)} {
		_, err := queue.New(m, name)
		assert.ErrorIs(t, err, queue.ErrInvalid, "name %q", name)
	}
	_, err := queue.New(m, "orders.eu_1-x")
	assert.NoError(t, err)
}

// Many waiting receivers: each enqueue wakes exactly as many as there are
// messages, and none stays asleep while a message is visible.
func TestMemoryWakesOneWaiterPerMessage(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	m := queue.NewMemory(queue.MemoryOptions{Clock: clk})
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const waiters = 8
	got := make(chan int, waiters)
	for range waiters {
		go func() {
			ds, _ := m.Receive(ctx, "q", queue.ReceiveOptions{Max: 1, Lease: time.Minute, Wait: time.Minute})
			got <- len(ds)
		}()
	}
	require.NoError(t, clk.BlockUntilTimers(ctx, waiters))
	_, err := m.Enqueue(ctx, "q", make([]queue.Message, waiters))
	require.NoError(t, err)
	for range waiters {
		select {
		case n := <-got:
			assert.Equal(t, 1, n)
		case <-ctx.Done():
			t.Fatal("a waiter stayed asleep with a message visible")
		}
	}
}

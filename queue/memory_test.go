package queue_test

import (
	"context"
	"strconv"
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

func bodiesOf(ds []queue.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Body)
	}
	return out
}

// A message made visible again (nacked, its lease passed, its delay due)
// keeps its place in line: highest priority first, then enqueue order.
func TestMemoryRequeuedMessagesKeepTheirPlace(t *testing.T) {
	ctx := context.Background()
	lease := 30 * time.Second
	tests := []struct {
		name  string
		msgs  []queue.Message
		act   func(t *testing.T, clk *clock.Fake, m *queue.Memory, first queue.Delivery)
		after []string // the deliveries after the first message is made visible again
	}{
		{"nacked without delay, it goes before later ones", []queue.Message{{Body: []byte("a")}, {Body: []byte("b")}, {Body: []byte("c")}},
			func(t *testing.T, _ *clock.Fake, m *queue.Memory, d queue.Delivery) {
				require.NoError(t, m.Nack(ctx, "q", d.Receipt, 0, "again"))
			}, []string{"a", "b", "c"}},
		{"its lease passed, it goes before later ones", []queue.Message{{Body: []byte("a")}, {Body: []byte("b")}},
			func(t *testing.T, clk *clock.Fake, _ *queue.Memory, _ queue.Delivery) {
				clk.Advance(lease)
			}, []string{"a", "b"}},
		{"nacked, it still goes after a higher priority enqueued later", []queue.Message{{Body: []byte("low")}, {Body: []byte("low2")}},
			func(t *testing.T, _ *clock.Fake, m *queue.Memory, d queue.Delivery) {
				_, err := m.Enqueue(ctx, "q", []queue.Message{{Body: []byte("high"), Priority: 3}})
				require.NoError(t, err)
				require.NoError(t, m.Nack(ctx, "q", d.Receipt, 0, "again"))
			}, []string{"high", "low", "low2"}},
		{"due after a delay, it goes before messages enqueued after it", []queue.Message{{Body: []byte("a")}, {Body: []byte("late"), Delay: time.Second}, {Body: []byte("b")}},
			func(t *testing.T, clk *clock.Fake, m *queue.Memory, d queue.Delivery) {
				require.NoError(t, m.Ack(ctx, "q", d.Receipt))
				clk.Advance(time.Second)
			}, []string{"late", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Unix(0, 0))
			m := queue.NewMemory(queue.MemoryOptions{Clock: clk})
			defer m.Close()
			_, err := m.Enqueue(ctx, "q", tt.msgs)
			require.NoError(t, err)
			first, err := m.Receive(ctx, "q", queue.ReceiveOptions{Max: 1, Lease: lease})
			require.NoError(t, err)
			require.Len(t, first, 1)
			tt.act(t, clk, m, first[0])
			ds, err := m.Receive(ctx, "q", queue.ReceiveOptions{Max: 10, Lease: lease})
			require.NoError(t, err)
			assert.Equal(t, tt.after, bodiesOf(ds))
		})
	}
}

func TestMemoryReceiptsHoldOnlyTheirDelivery(t *testing.T) {
	ctx := context.Background()
	lease := queue.ReceiveOptions{Max: 1, Lease: time.Minute}
	t.Run("a receipt of another queue is stale", func(t *testing.T) {
		m := queue.NewMemory(queue.MemoryOptions{})
		defer m.Close()
		for _, name := range []string{"a", "b"} {
			_, err := m.Enqueue(ctx, name, []queue.Message{{Body: []byte(name)}})
			require.NoError(t, err)
		}
		da, err := m.Receive(ctx, "a", lease)
		require.NoError(t, err)
		db, err := m.Receive(ctx, "b", lease)
		require.NoError(t, err)
		assert.ErrorIs(t, m.Ack(ctx, "b", da[0].Receipt), queue.ErrStaleReceipt)
		assert.NoError(t, m.Ack(ctx, "b", db[0].Receipt))
		assert.NoError(t, m.Ack(ctx, "a", da[0].Receipt))
	})
	t.Run("a receipt of an earlier backend is stale", func(t *testing.T) {
		var receipts [2]queue.Receipt
		backends := [2]*queue.Memory{queue.NewMemory(queue.MemoryOptions{}), queue.NewMemory(queue.MemoryOptions{})}
		for i, m := range backends {
			defer m.Close()
			_, err := m.Enqueue(ctx, "q", []queue.Message{{}})
			require.NoError(t, err)
			ds, err := m.Receive(ctx, "q", lease)
			require.NoError(t, err)
			receipts[i] = ds[0].Receipt
		}
		assert.ErrorIs(t, backends[1].Ack(ctx, "q", receipts[0]), queue.ErrStaleReceipt)
		assert.NoError(t, backends[1].Ack(ctx, "q", receipts[1]))
	})
	t.Run("a receipt stays stale when its slot holds a new message", func(t *testing.T) {
		m := queue.NewMemory(queue.MemoryOptions{})
		defer m.Close()
		_, err := m.Enqueue(ctx, "q", []queue.Message{{Body: []byte("old")}})
		require.NoError(t, err)
		old, err := m.Receive(ctx, "q", lease)
		require.NoError(t, err)
		require.NoError(t, m.Ack(ctx, "q", old[0].Receipt)) // the queue is empty: its table starts afresh
		_, err = m.Enqueue(ctx, "q", []queue.Message{{Body: []byte("new")}})
		require.NoError(t, err)
		cur, err := m.Receive(ctx, "q", lease)
		require.NoError(t, err)
		for name, call := range map[string]func() error{
			"ack":         func() error { return m.Ack(ctx, "q", old[0].Receipt) },
			"nack":        func() error { return m.Nack(ctx, "q", old[0].Receipt, 0, "") },
			"extend":      func() error { return m.Extend(ctx, "q", old[0].Receipt, time.Minute) },
			"dead-letter": func() error { return m.DeadLetter(ctx, "q", old[0].Receipt, "") },
		} {
			assert.ErrorIs(t, call(), queue.ErrStaleReceipt, name)
		}
		assert.NoError(t, m.Ack(ctx, "q", cur[0].Receipt))
	})
	t.Run("malformed receipts are invalid, well-formed unknown ones stale", func(t *testing.T) {
		m := queue.NewMemory(queue.MemoryOptions{})
		defer m.Close()
		for _, r := range []queue.Receipt{"zz", ".1", "1.", "w.1", "\x10.1", "0123456789abcd.1"} {
			assert.ErrorIs(t, m.Ack(ctx, "q", r), queue.ErrInvalid, "receipt %q", r)
		}
		for _, r := range []queue.Receipt{"1.X", "1.0", "V.0", "1.zzzzzzzzzzzzzz"} {
			assert.ErrorIs(t, m.Ack(ctx, "q", r), queue.ErrStaleReceipt, "receipt %q", r)
		}
	})
}

// Receivers waiting for batches are woken as many as a batch needs, and
// none is left asleep while a message is visible.
func TestMemoryWakesBatchReceiversForEveryMessage(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	m := queue.NewMemory(queue.MemoryOptions{Clock: clk})
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const waiters = 3
	got := make(chan int, waiters)
	for range waiters {
		go func() {
			ds, _ := m.Receive(ctx, "q", queue.ReceiveOptions{Max: 2, Lease: time.Minute, Wait: time.Minute})
			got <- len(ds)
		}()
	}
	require.NoError(t, clk.BlockUntilTimers(ctx, waiters))
	_, err := m.Enqueue(ctx, "q", make([]queue.Message, 5))
	require.NoError(t, err)
	total := 0
	for range waiters {
		select {
		case n := <-got:
			total += n
		case <-ctx.Done():
			t.Fatalf("a waiter stayed asleep with messages visible (%d taken)", total)
		}
	}
	assert.Equal(t, 5, total)
}

// Thousands of messages, acked out of order: order, depth and the oldest
// age hold while the rings and the slot table grow and shrink.
func TestMemoryManyMessagesAckedOutOfOrder(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Unix(0, 0))
	m := queue.NewMemory(queue.MemoryOptions{Clock: clk})
	defer m.Close()
	const n = 5000
	for i := 0; i < n; i += queue.MaxBatch {
		msgs := make([]queue.Message, queue.MaxBatch)
		for j := range msgs {
			msgs[j] = queue.Message{Body: []byte(strconv.Itoa(i + j))}
		}
		_, err := m.Enqueue(ctx, "q", msgs)
		require.NoError(t, err)
	}
	clk.Advance(time.Second)
	_, err := m.Enqueue(ctx, "q", []queue.Message{{Body: []byte("last")}})
	require.NoError(t, err)
	clk.Advance(time.Second)

	var ds []queue.Delivery
	for len(ds) < n+1 {
		got, err := m.Receive(ctx, "q", queue.ReceiveOptions{Max: queue.MaxBatch, Lease: time.Hour})
		require.NoError(t, err)
		require.NotEmpty(t, got)
		ds = append(ds, got...)
	}
	for i := range n {
		require.Equal(t, strconv.Itoa(i), string(ds[i].Body), "delivery %d", i)
	}
	// Ack the first n from the middle outwards, so that the oldest stays
	// live until the end.
	for i := range n {
		k := n/2 + (i+1)/2*(1-2*(i%2))
		require.NoError(t, m.Ack(ctx, "q", ds[k].Receipt), "ack %d", k)
	}
	st, err := m.Stats(ctx, "q")
	require.NoError(t, err)
	assert.Equal(t, 1, st.InFlight)
	assert.Equal(t, time.Second, st.OldestAge, "only the last message is left")
	require.NoError(t, m.Ack(ctx, "q", ds[n].Receipt))
	st, err = m.Stats(ctx, "q")
	require.NoError(t, err)
	assert.Zero(t, st.InFlight+st.Depth+st.Delayed)
	assert.Zero(t, st.OldestAge)
	assert.Equal(t, uint64(n+1), st.Processed)
}

// Leases end when they should whatever order they were taken in: a
// shorter lease taken after a longer one, an extended one, and one held
// while many others come and go.
func TestMemoryLeasesEndInTheirOwnTime(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, clk *clock.Fake, m *queue.Memory)
	}{
		{"a shorter lease taken after a longer one ends first", func(t *testing.T, clk *clock.Fake, m *queue.Memory) {
			enqueue(t, m, "long", "short")
			long := receive(t, m, 1, time.Minute)
			short := receive(t, m, 1, 10*time.Second)
			clk.Advance(10 * time.Second)
			assert.Equal(t, []string{"short"}, bodiesOf(receive(t, m, 10, time.Hour)))
			assert.ErrorIs(t, m.Ack(ctx, "q", short[0].Receipt), queue.ErrStaleReceipt)
			require.NoError(t, m.Ack(ctx, "q", long[0].Receipt))
		}},
		{"an extended lease outlives the ones taken after it", func(t *testing.T, clk *clock.Fake, m *queue.Memory) {
			enqueue(t, m, "a", "b")
			a := receive(t, m, 1, 10*time.Second)
			b := receive(t, m, 1, 20*time.Second)
			require.NoError(t, m.Extend(ctx, "q", a[0].Receipt, time.Minute))
			clk.Advance(20 * time.Second)
			assert.Equal(t, []string{"b"}, bodiesOf(receive(t, m, 10, time.Hour)))
			assert.ErrorIs(t, m.Ack(ctx, "q", b[0].Receipt), queue.ErrStaleReceipt)
			require.NoError(t, m.Ack(ctx, "q", a[0].Receipt))
		}},
		{"a lease held while thousands are acked still ends", func(t *testing.T, clk *clock.Fake, m *queue.Memory) {
			enqueue(t, m, "held")
			held := receive(t, m, 1, time.Minute)
			for i := range 5000 {
				enqueue(t, m, strconv.Itoa(i))
				ds := receive(t, m, 1, time.Minute)
				require.NoError(t, m.Ack(ctx, "q", ds[0].Receipt))
			}
			st, err := m.Stats(ctx, "q")
			require.NoError(t, err)
			assert.Equal(t, 1, st.InFlight)
			assert.Equal(t, 0, st.Delayed)
			clk.Advance(time.Minute)
			assert.Equal(t, []string{"held"}, bodiesOf(receive(t, m, 10, time.Minute)))
			assert.ErrorIs(t, m.Ack(ctx, "q", held[0].Receipt), queue.ErrStaleReceipt)
		}},
		{"a nacked lease leaves the ring and comes back after its delay", func(t *testing.T, clk *clock.Fake, m *queue.Memory) {
			enqueue(t, m, "a", "b")
			ds := receive(t, m, 2, time.Minute)
			require.NoError(t, m.Nack(ctx, "q", ds[0].Receipt, 5*time.Second, "again"))
			st, err := m.Stats(ctx, "q")
			require.NoError(t, err)
			assert.Equal(t, 1, st.InFlight)
			assert.Equal(t, 1, st.Delayed)
			clk.Advance(5 * time.Second)
			assert.Equal(t, []string{"a"}, bodiesOf(receive(t, m, 10, time.Minute)))
			require.NoError(t, m.Ack(ctx, "q", ds[1].Receipt))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(time.Unix(0, 0))
			m := queue.NewMemory(queue.MemoryOptions{Clock: clk})
			defer m.Close()
			tt.run(t, clk, m)
		})
	}
}

func enqueue(t *testing.T, m *queue.Memory, bodies ...string) {
	t.Helper()
	msgs := make([]queue.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = queue.Message{Body: []byte(b)}
	}
	_, err := m.Enqueue(context.Background(), "q", msgs)
	require.NoError(t, err)
}

func receive(t *testing.T, m *queue.Memory, maxN int, lease time.Duration) []queue.Delivery {
	t.Helper()
	ds, err := m.Receive(context.Background(), "q", queue.ReceiveOptions{Max: maxN, Lease: lease})
	require.NoError(t, err)
	return ds
}

// onlyBackend hides the optional interfaces of the backend it wraps.
type onlyBackend struct{ queue.Backend }

func TestAckBatchWithoutBatchAckerAcksOneByOne(t *testing.T) {
	mem := queue.NewMemory(queue.MemoryOptions{})
	t.Cleanup(func() { mem.Close() })
	q, err := queue.New(onlyBackend{mem}, "q")
	require.NoError(t, err)
	ctx := context.Background()
	_, err = q.EnqueueBatch(ctx, []queue.Message{{Body: []byte("a")}, {Body: []byte("b")}})
	require.NoError(t, err)
	ds, err := q.ReceiveAppend(ctx, nil, queue.ReceiveOptions{Max: 2})
	require.NoError(t, err)
	require.Len(t, ds, 2)
	require.NoError(t, q.Ack(ctx, ds[0].Receipt))

	err = q.AckBatch(ctx, ds[0].Receipt, ds[1].Receipt)
	var be *queue.BatchError
	require.ErrorAs(t, err, &be)
	assert.ErrorIs(t, be.Errs[0], queue.ErrStaleReceipt)
	assert.NoError(t, be.Errs[1])
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), st.Processed)
}

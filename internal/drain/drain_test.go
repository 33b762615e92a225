package drain

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGroup(t *testing.T) {
	var g Group
	require.NoError(t, g.Wait(context.Background()), "nothing in flight")
	require.True(t, g.Enter())
	require.True(t, g.Enter())
	g.Close()
	assert.True(t, g.Closed())
	assert.False(t, g.Enter(), "refused after Close")

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, g.Wait(ended), context.Canceled, "two still in flight")

	done := make(chan error, 1)
	go func() { done <- g.Wait(context.Background()) }()
	g.Leave()
	select {
	case err := <-done:
		t.Fatalf("Wait returned (%v) with one still in flight", err)
	default:
	}
	g.Leave()
	require.NoError(t, <-done)
}

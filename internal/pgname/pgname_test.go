package pgname

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidNamespace(t *testing.T) {
	for ns, want := range map[string]bool{
		"switchboard": true, "_a1": true, strings.Repeat("a", 48): true,
		"": false, "1a": false, "A": false, "a-b": false, "a.b": false, strings.Repeat("a", 49): false,
	} {
		assert.Equal(t, want, ValidNamespace(ns), "ValidNamespace(%q)", ns)
	}
}

func TestLockKeyIsStable(t *testing.T) {
	assert.Equal(t, LockKey("x"), LockKey("x"))
	assert.NotEqual(t, LockKey("switchboard.queue.migrate"), LockKey("switchboard.pubsub.migrate"))
}

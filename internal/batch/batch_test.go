package batch_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/batch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestErrorsIsNilUntilACallFails(t *testing.T) {
	e := batch.New(3)
	assert.Nil(t, e.List())
	boom := errors.New("boom")
	e.Fail(1, boom)
	assert.Equal(t, []error{nil, boom, nil}, e.List())
	assert.True(t, e.Failed(1))
	assert.False(t, e.Failed(0))
}

func TestPipelinedSendsAllBeforeAwaitingAny(t *testing.T) {
	var order []string
	refused, failed := errors.New("refused"), errors.New("failed")
	errs := batch.Pipelined(3, func(i int) (int, error) {
		order = append(order, "send")
		if i == 0 {
			return 0, refused
		}
		return i, nil
	}, func(i int) error {
		order = append(order, "await")
		if i == 2 {
			return failed
		}
		return nil
	})
	assert.Equal(t, []string{"send", "send", "send", "await", "await"}, order)
	assert.Equal(t, []error{refused, nil, failed}, errs)
	assert.Nil(t, batch.Pipelined(2, func(i int) (int, error) { return i, nil }, func(int) error { return nil }))
}

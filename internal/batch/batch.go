// Package batch collects the outcomes of the calls of a batch, for the
// backends' batch operations (queue.BatchAcker): nil when every call
// succeeded, else one error per call.
package batch

// Errors gathers the errors of a batch of n calls. Its zero value is not
// ready: use New.
type Errors struct {
	n    int
	errs []error
}

// New returns the outcome of a batch of n calls, all succeeded so far.
func New(n int) Errors { return Errors{n: n} }

// Fail records that call i failed with err.
func (e *Errors) Fail(i int, err error) {
	if e.errs == nil {
		e.errs = make([]error, e.n)
	}
	e.errs[i] = err
}

// Failed reports whether call i failed.
func (e *Errors) Failed(i int) bool { return e.errs != nil && e.errs[i] != nil }

// List returns nil when every call succeeded, else the error of each call
// (nil where it succeeded).
func (e *Errors) List() []error { return e.errs }

// Pipelined makes n calls in two halves: it sends every call, then awaits
// each one sent, so that a backend whose sender gathers what is waiting
// settles the batch in one round trip.
func Pipelined[T any](n int, send func(i int) (T, error), await func(T) error) []error {
	e := New(n)
	sent := make([]T, n)
	for i := range n {
		t, err := send(i)
		if err != nil {
			e.Fail(i, err)
			continue
		}
		sent[i] = t
	}
	for i := range n {
		if e.Failed(i) {
			continue
		}
		if err := await(sent[i]); err != nil {
			e.Fail(i, err)
		}
	}
	return e.List()
}

package poll

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/pubsub"
)

// ParamError is bad input in a request's query (wait, max, from). It
// becomes 400 problem details at the HTTP edge.
type ParamError struct {
	Name, Value string
	Want        string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("poll: %s=%q: want %s", e.Name, e.Value, e.Want)
}

// problemFor is the one place where this package's errors become HTTP
// statuses.
func problemFor(err error) problem.Details {
	var pe *ParamError
	var mb *http.MaxBytesError
	var sc interface{ HTTPStatus() int }
	switch {
	case errors.As(err, &pe):
		return problem.New(http.StatusBadRequest, strings.TrimPrefix(pe.Error(), "poll: "))
	case errors.As(err, &mb):
		return problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mb.Limit))
	case errors.Is(err, ErrNotFound):
		return problem.New(http.StatusNotFound, "no such job (or it expired)")
	case errors.Is(err, ErrFinished):
		return problem.New(http.StatusConflict, "the job already finished")
	case errors.Is(err, errNotSucceeded):
		return problem.New(http.StatusConflict, err.Error())
	case errors.Is(err, ErrTooManyJobs):
		return unavailable("too many jobs; try again later")
	case errors.Is(err, errTooManyHeld):
		return unavailable("too many held requests")
	case errors.Is(err, ErrClosed):
		return unavailable("the server is shutting down")
	case errors.Is(err, pubsub.ErrClosed):
		return unavailable("the broker is closed")
	case errors.Is(err, pubsub.ErrInvalidCursor):
		return problem.New(http.StatusBadRequest, "the cursor is not one this server gave")
	case errors.Is(err, pubsub.ErrInvalidSubject):
		return problem.New(http.StatusBadRequest, err.Error())
	case errors.As(err, &sc) && sc.HTTPStatus() >= 400 && sc.HTTPStatus() <= 599:
		return problem.New(sc.HTTPStatus(), err.Error())
	default:
		return unavailable(strings.TrimPrefix(err.Error(), "poll: "))
	}
}

// unavailable is a 503 that asks the client to come back in a second.
func unavailable(detail string) problem.Details {
	return problem.New(http.StatusServiceUnavailable, detail)
}

// writeProblem writes d, with Retry-After for a 503.
func writeProblem(w http.ResponseWriter, d problem.Details) {
	if d.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	problem.Write(w, d)
}

func retryAfterHeader(w http.ResponseWriter, seconds int) {
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
}

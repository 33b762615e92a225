package request

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Code classifies an error, on both sides of a call. The set is closed:
// these twelve values are the whole vocabulary, each mapped to one HTTP
// status by [Code.HTTPStatus]. A Code is itself an error, so a handler may
// return one as is (request.NotFound) and a caller may test for one with
// errors.Is(err, request.NotFound).
type Code string

// The codes, with the HTTP status each is written as.
const (
	InvalidArgument    Code = "invalid_argument"    // 400
	NotFound           Code = "not_found"           // 404
	AlreadyExists      Code = "already_exists"      // 409
	PermissionDenied   Code = "permission_denied"   // 403
	Unauthenticated    Code = "unauthenticated"     // 401
	FailedPrecondition Code = "failed_precondition" // 412
	Conflict           Code = "conflict"            // 409
	TooManyRequests    Code = "too_many_requests"   // 429
	Unavailable        Code = "unavailable"         // 503
	DeadlineExceeded   Code = "deadline_exceeded"   // 504
	Canceled           Code = "canceled"            // 499, the client closed the request
	Internal           Code = "internal"            // 500
)

// StatusClientClosedRequest is the status logged when the caller went away
// before the handler answered (nginx's 499). Nobody receives it; it keeps
// such calls apart from timeouts (504) in logs and metrics.
const StatusClientClosedRequest = 499

// Error makes a Code usable as an error value and as an errors.Is target.
func (c Code) Error() string { return string(c) }

// Valid reports whether c is one of the twelve codes.
func (c Code) Valid() bool {
	switch c {
	case InvalidArgument, NotFound, AlreadyExists, PermissionDenied, Unauthenticated,
		FailedPrecondition, Conflict, TooManyRequests, Unavailable, DeadlineExceeded,
		Canceled, Internal:
		return true
	}
	return false
}

// HTTPStatus is the one place a code becomes an HTTP status. An unknown
// code is 500.
func (c Code) HTTPStatus() int {
	switch c {
	case InvalidArgument:
		return http.StatusBadRequest
	case NotFound:
		return http.StatusNotFound
	case AlreadyExists, Conflict:
		return http.StatusConflict
	case PermissionDenied:
		return http.StatusForbidden
	case Unauthenticated:
		return http.StatusUnauthorized
	case FailedPrecondition:
		return http.StatusPreconditionFailed
	case TooManyRequests:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case DeadlineExceeded:
		return http.StatusGatewayTimeout
	case Canceled:
		return StatusClientClosedRequest
	default:
		return http.StatusInternalServerError
	}
}

// CodeForStatus is the other direction: the code a client gives a failed
// response that carries no code of its own (a proxy's 502, a plain-text
// 404). 409 reads as Conflict; the code member of a problem details body
// tells AlreadyExists apart.
func CodeForStatus(status int) Code {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotAcceptable,
		http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType,
		http.StatusUnprocessableEntity:
		return InvalidArgument
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return PermissionDenied
	case http.StatusNotFound, http.StatusGone:
		return NotFound
	case http.StatusConflict:
		return Conflict
	case http.StatusPreconditionFailed:
		return FailedPrecondition
	case http.StatusTooManyRequests:
		return TooManyRequests
	case StatusClientClosedRequest:
		return Canceled
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return DeadlineExceeded
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return Unavailable
	}
	if status >= 400 && status < 500 {
		return InvalidArgument
	}
	return Internal
}

// FieldError says what is wrong with one field of a request. It travels in
// the "errors" extension member of the problem details.
type FieldError struct {
	// Field names the field, as the client spells it ("name",
	// "address.zip").
	Field string `json:"field"`
	// Detail says what is wrong, for a human.
	Detail string `json:"detail"`
}

// Error is the one error type of the package: a Code, a message for the
// caller, and optionally field errors and the cause. Handlers return it
// (or a bare Code, or any error, which counts as Internal); clients get it
// back from [Call], rebuilt from the problem details, so both sides switch
// on e.Code or errors.Is(err, request.NotFound).
//
// The Message of an Internal error is not sent unless Public is set: the
// caller reads "internal error" and the server log has the rest. Err, the
// cause, is never sent.
type Error struct {
	Code    Code
	Message string
	// Fields lists per-field problems, usually of an InvalidArgument.
	Fields []FieldError
	// Public lets the Message of an Internal error reach the caller.
	Public bool
	// RetryAfter, when positive, is sent as a Retry-After header (whole
	// seconds, rounded up); on the client it is the server's Retry-After.
	RetryAfter time.Duration
	// Type, Title and Instance are the RFC 9457 members of the same names.
	// Empty means about:blank, the status text and the request path.
	Type, Title, Instance string
	// Err is the cause, kept for errors.Is/As and logs; never sent.
	Err error

	status int // set by the package where one code has several statuses (413, 415, 422)
}

// Errorf returns an *Error with code c and a formatted message. A %w verb
// also makes its operand the cause (Err). The message is shown to the
// caller (for Internal only when Public), so keep secrets out of it.
func Errorf(c Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: c, Message: err.Error(), Err: errors.Unwrap(err)}
}

// Invalid returns an InvalidArgument error that lists field errors: what a
// request's Validate method returns.
func Invalid(fields ...FieldError) *Error {
	return &Error{Code: InvalidArgument, Message: "the request has invalid fields", Fields: fields}
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if msg == "" {
		return "request: " + string(e.code())
	}
	return "request: " + string(e.code()) + ": " + msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's Code, so errors.Is(err, request.NotFound)
// works on an *Error.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.code()
}

// HTTPStatus is the status e is written with: its code's, except where the
// package chose a more precise one (413, 415, 422), or, on the client, the
// status the response had.
func (e *Error) HTTPStatus() int {
	if e.status != 0 {
		return e.status
	}
	return e.code().HTTPStatus()
}

func (e *Error) code() Code {
	if e.Code.Valid() {
		return e.Code
	}
	return Internal
}

// CodeOf returns the code of err: the Code of an *Error or Code in its
// chain, DeadlineExceeded or Canceled for the context errors, "" for nil
// and Internal for anything else.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.code()
	}
	var c Code
	if errors.As(err, &c) && c.Valid() {
		return c
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Internal
}

// asError turns any error into the *Error that will be written for it.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code := CodeOf(err)
	return &Error{Code: code, Err: err}
}

func withStatus(status int, c Code, msg string) *Error {
	return &Error{Code: c, Message: msg, status: status}
}

// retryAfterHeader formats d as whole seconds, rounded up.
func retryAfterHeader(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date (relative to now). Absent, malformed or past: zero.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s > int64(24*time.Hour/time.Second) {
			s = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

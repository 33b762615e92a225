package request_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/switchboard-go/switchboard/request"
)

var allCodes = []struct {
	code   request.Code
	status int
}{
	{request.InvalidArgument, http.StatusBadRequest},
	{request.NotFound, http.StatusNotFound},
	{request.AlreadyExists, http.StatusConflict},
	{request.PermissionDenied, http.StatusForbidden},
	{request.Unauthenticated, http.StatusUnauthorized},
	{request.FailedPrecondition, http.StatusPreconditionFailed},
	{request.Conflict, http.StatusConflict},
	{request.TooManyRequests, http.StatusTooManyRequests},
	{request.Unavailable, http.StatusServiceUnavailable},
	{request.DeadlineExceeded, http.StatusGatewayTimeout},
	{request.Canceled, request.StatusClientClosedRequest},
	{request.Internal, http.StatusInternalServerError},
}

func TestCodeToStatus(t *testing.T) {
	for _, tt := range allCodes {
		t.Run(string(tt.code), func(t *testing.T) {
			assert.True(t, tt.code.Valid())
			assert.Equal(t, tt.status, tt.code.HTTPStatus())
		})
	}
	assert.False(t, request.Code("teapot").Valid())
	assert.Equal(t, http.StatusInternalServerError, request.Code("teapot").HTTPStatus(), "unknown code")
}

func TestStatusToCode(t *testing.T) {
	tests := []struct {
		status int
		want   request.Code
	}{
		{400, request.InvalidArgument},
		{401, request.Unauthenticated},
		{403, request.PermissionDenied},
		{404, request.NotFound},
		{405, request.InvalidArgument},
		{408, request.DeadlineExceeded},
		{409, request.Conflict},
		{410, request.NotFound},
		{412, request.FailedPrecondition},
		{413, request.InvalidArgument},
		{415, request.InvalidArgument},
		{418, request.InvalidArgument},
		{422, request.InvalidArgument},
		{429, request.TooManyRequests},
		{499, request.Canceled},
		{500, request.Internal},
		{501, request.Internal},
		{502, request.Unavailable},
		{503, request.Unavailable},
		{504, request.DeadlineExceeded},
		{599, request.Internal},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			assert.Equal(t, tt.want, request.CodeForStatus(tt.status))
		})
	}
	// Every code but AlreadyExists (which shares 409 with Conflict and is
	// told apart by the code member) survives status and back.
	for _, tt := range allCodes {
		if tt.code != request.AlreadyExists {
			assert.Equal(t, tt.code, request.CodeForStatus(tt.code.HTTPStatus()), "code %s", tt.code)
		}
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want request.Code
	}{
		{"nil", nil, ""},
		{"an *Error", request.Errorf(request.NotFound, "x"), request.NotFound},
		{"a wrapped *Error", fmt.Errorf("ctx: %w", request.Errorf(request.Conflict, "x")), request.Conflict},
		{"a bare code", request.PermissionDenied, request.PermissionDenied},
		{"a wrapped bare code", fmt.Errorf("ctx: %w", request.Unauthenticated), request.Unauthenticated},
		{"deadline", fmt.Errorf("q: %w", context.DeadlineExceeded), request.DeadlineExceeded},
		{"canceled", context.Canceled, request.Canceled},
		{"anything else", errBoom, request.Internal},
		{"an *Error with an unknown code", &request.Error{Code: "teapot"}, request.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, request.CodeOf(tt.err))
		})
	}
}

func TestErrorMatchesItsCodeWithErrorsIs(t *testing.T) {
	err := fmt.Errorf("loading: %w", request.Errorf(request.NotFound, "no user %d: %w", 7, errBoom))
	assert.ErrorIs(t, err, request.NotFound)
	assert.NotErrorIs(t, err, request.Conflict)
	assert.ErrorIs(t, err, errBoom, "the %w operand is the cause")
	var e *request.Error
	assert.True(t, errors.As(err, &e))
	assert.Equal(t, "no user 7: database password is hunter2", e.Message)
	assert.Equal(t, "request: not_found: no user 7: database password is hunter2", e.Error())
}

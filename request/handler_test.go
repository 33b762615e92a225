package request_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/request"
)

func TestRoundTripOfEveryCode(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("POST /fail/{code}", request.NewHandler(func(ctx context.Context, in createGreeting) (greeting, error) {
		c := request.Code(request.PathValue(ctx, "code"))
		e := request.Errorf(c, "failed with %s for %s", c, in.Name)
		e.Fields = []request.FieldError{{Field: "name", Detail: "checked"}}
		return greeting{}, e
	}, &request.HandlerOptions{Logger: quiet}))

	transports(t, mux, func(t *testing.T, base string, d request.Doer) {
		c := request.NewClient(base, &request.ClientOptions{Doer: d, Retry: noRetry()})
		for _, tt := range allCodes {
			t.Run(string(tt.code), func(t *testing.T) {
				_, err := request.Call[greeting](testCtx(t), c, "POST", "/fail/"+string(tt.code), createGreeting{Name: "ann"})
				var e *request.Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, tt.code, e.Code)
				assert.ErrorIs(t, err, tt.code)
				assert.Equal(t, tt.status, e.HTTPStatus())
				assert.Equal(t, []request.FieldError{{Field: "name", Detail: "checked"}}, e.Fields)
				assert.Equal(t, "/fail/"+string(tt.code), e.Instance)
				if tt.code == request.Internal {
					assert.Equal(t, "internal error", e.Message, "an internal message stays on the server")
				} else {
					assert.Equal(t, fmt.Sprintf("failed with %s for ann", tt.code), e.Message)
				}
			})
		}
	})
}

func TestRoundTripSuccessAndPathValues(t *testing.T) {
	transports(t, echoMux(nil), func(t *testing.T, base string, d request.Doer) {
		c := request.NewClient(base, &request.ClientOptions{Doer: d})
		got, err := request.Call[greeting](testCtx(t), c, "POST", "/greetings", createGreeting{Name: "ann"})
		require.NoError(t, err)
		assert.Equal(t, greeting{ID: "g1", Message: "hello, ann"}, got)

		got, err = request.Call[greeting](testCtx(t), c, "GET", "/greetings/g1", struct{}{})
		require.NoError(t, err)
		assert.Equal(t, greeting{ID: "g1", Message: "hello"}, got)

		_, err = request.Call[greeting](testCtx(t), c, "GET", "/greetings/zz", struct{}{})
		assert.ErrorIs(t, err, request.NotFound)
		assert.ErrorContains(t, err, `no greeting "zz"`)
	})
}

func TestInternalErrorsStayOnTheServer(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tests := []struct {
		name       string
		err        error
		wantDetail string
	}{
		{"a plain error", fmt.Errorf("query: %w", errBoom), "internal error"},
		{"an Internal *Error", request.Errorf(request.Internal, "query: %v", errBoom), "internal error"},
		{"a public Internal *Error", &request.Error{Code: request.Internal, Message: "disk full", Public: true}, "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			h := request.NewHandler(func(context.Context, struct{}) (struct{}, error) { return struct{}{}, tt.err },
				&request.HandlerOptions{Logger: log})
			resp := send(t, h, "GET", "/x", "", "")
			d, ok := problem.Read(resp)
			require.True(t, ok)
			assert.Equal(t, 500, d.Status)
			assert.Equal(t, tt.wantDetail, d.Detail)
			assert.Equal(t, "internal", d.Extensions["code"])
			assert.Contains(t, logs.String(), "status=500", "the server log has the error")
		})
	}
	assert.NotContains(t, "internal error", "hunter2")
}

// TestBadInputGetsProblemDetails covers the HTTP edge: every malformed
// request gets a 4xx problem and the handler never runs.
func TestBadInputGetsProblemDetails(t *testing.T) {
	strict := request.NewHandler(func(context.Context, createGreeting) (greeting, error) {
		panic("the handler must not run")
	}, &request.HandlerOptions{Logger: quiet, MaxBodyBytes: 64})
	validation422 := request.NewHandler(func(context.Context, createGreeting) (greeting, error) {
		panic("the handler must not run")
	}, &request.HandlerOptions{Logger: quiet, ValidationStatus: http.StatusUnprocessableEntity})

	tests := []struct {
		name        string
		h           http.Handler
		contentType string
		accept      string
		body        string
		wantStatus  int
		wantDetail  string
		wantFields  []any
	}{
		{"malformed JSON", strict, "application/json", "", `{"name":`, 400, "malformed", nil},
		{"a syntax error", strict, "application/json", "", `{"name" "x"}`, 400, "malformed JSON at byte", nil},
		{"a wrong JSON type", strict, "application/json", "", `{"name": 7}`, 400, `field "name"`,
			[]any{map[string]any{"field": "name", "detail": "want string, got number"}}},
		{"trailing data", strict, "application/json", "", `{"name":"a"} {}`, 400, "after the JSON value", nil},
		{"an unknown field", strict, "application/json", "", `{"name":"a","nmae":"b"}`, 400, `unknown field "nmae"`,
			[]any{map[string]any{"field": "nmae", "detail": "unknown field"}}},
		{"a wrong content type", strict, "text/plain", "", `name=a`, 415, `unsupported Content-Type "text/plain"`, nil},
		{"an oversized body", strict, "application/json", "", `{"name":"` + strings.Repeat("a", 100) + `"}`, 413, "larger than 64 bytes", nil},
		{"an unacceptable Accept", strict, "application/json", "application/xml", `{"name":"a"}`, 406, "no acceptable response type", nil},
		{"a failed validation", strict, "application/json", "", `{"name":" "}`, 400, "invalid fields",
			[]any{map[string]any{"field": "name", "detail": "is required"}}},
		{"a failed validation, as 422", validation422, "application/json", "", `{}`, 422, "invalid fields",
			[]any{map[string]any{"field": "name", "detail": "is required"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("POST", "/greetings", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", tt.contentType)
			if tt.accept != "" {
				r.Header.Set("Accept", tt.accept)
			}
			resp, err := request.InMemory{Handler: tt.h}.Do(r)
			require.NoError(t, err)
			d, ok := problem.Read(resp)
			require.True(t, ok, "a problem details body")
			assert.Equal(t, tt.wantStatus, resp.StatusCode)
			assert.Equal(t, tt.wantStatus, d.Status)
			assert.Equal(t, "invalid_argument", d.Extensions["code"])
			assert.Contains(t, d.Detail, tt.wantDetail)
			if tt.wantFields != nil {
				assert.Equal(t, tt.wantFields, d.Extensions["errors"])
			}
		})
	}
}

func TestUnknownFieldsCanBeAllowed(t *testing.T) {
	h := request.NewHandler(func(_ context.Context, in createGreeting) (greeting, error) {
		return greeting{Message: in.Name}, nil
	}, &request.HandlerOptions{Codecs: []request.Codec{request.JSON{}}})
	resp := send(t, h, "POST", "/", "application/json", `{"name":"ann","extra":1}`)
	assert.Equal(t, 200, resp.StatusCode)
	assert.JSONEq(t, `{"id":"","message":"ann"}`, readAll(t, resp.Body))
}

func TestContentNegotiation(t *testing.T) {
	h := request.NewHandler(func(_ context.Context, in createGreeting) (greeting, error) {
		return greeting{Message: in.Name}, nil
	}, &request.HandlerOptions{Codecs: []request.Codec{upperCodec{}, request.JSON{}}, Status: http.StatusCreated})
	tests := []struct {
		name, contentType, accept, wantType string
	}{
		{"no Accept answers with the first codec", "application/json", "", "text/x-upper"},
		{"an exact Accept", "application/json", "application/json", "application/json"},
		{"a wildcard in a list", "application/json; charset=utf-8", "text/html, application/*;q=0.5", "application/json"},
		{"q=0 excludes", "text/x-upper", "text/x-upper;q=0, application/json", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"name":"ann"}`
			if tt.contentType == "text/x-upper" {
				body = "ann"
			}
			r, _ := http.NewRequest("POST", "/", strings.NewReader(body))
			r.Header.Set("Content-Type", tt.contentType)
			r.Header.Set("Accept", tt.accept)
			resp, err := request.InMemory{Handler: h}.Do(r)
			require.NoError(t, err)
			assert.Equal(t, http.StatusCreated, resp.StatusCode)
			assert.Equal(t, tt.wantType, resp.Header.Get("Content-Type"))
		})
	}
}

// upperCodec is a second codec: a greeting's name as plain text.
type upperCodec struct{}

func (upperCodec) ContentType() string { return "text/x-upper" }
func (upperCodec) Marshal(v any) ([]byte, error) {
	return []byte(strings.ToUpper(v.(greeting).Message)), nil
}
func (upperCodec) Unmarshal(data []byte, v any) error {
	v.(*createGreeting).Name = string(data)
	return nil
}

func TestPanicsBecome500(t *testing.T) {
	var logs bytes.Buffer
	h := request.NewHandler(func(context.Context, struct{}) (struct{}, error) {
		panic("kaboom")
	}, &request.HandlerOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	transports(t, h, func(t *testing.T, base string, d request.Doer) {
		logs.Reset()
		c := request.NewClient(base, &request.ClientOptions{Doer: d})
		_, err := request.Call[struct{}](testCtx(t), c, "GET", "/", struct{}{})
		assert.ErrorIs(t, err, request.Internal)
		assert.ErrorContains(t, err, "internal error")
		assert.Contains(t, logs.String(), "kaboom")
		assert.Contains(t, logs.String(), "handler_test.go", "the stack is logged")
	})
}

func TestInMemoryTurnsAPanicIntoAnError(t *testing.T) {
	raw := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("raw") })
	r, _ := http.NewRequest("GET", "http://x/", nil)
	_, err := request.InMemory{Handler: raw}.Do(r)
	assert.ErrorContains(t, err, "panicked: raw")

	abort := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	_, err = request.InMemory{Handler: abort}.Do(r)
	assert.ErrorContains(t, err, "aborted")

	_, err = request.InMemory{}.Do(r)
	assert.Error(t, err)
}

func TestResponseHeaderAndHTTPRequest(t *testing.T) {
	h := request.NewHandler(func(ctx context.Context, in createGreeting) (greeting, error) {
		request.ResponseHeader(ctx).Set("Location", "/greetings/g1")
		return greeting{ID: "g1", Message: request.HTTPRequest(ctx).Header.Get("X-Who")}, nil
	}, &request.HandlerOptions{Status: http.StatusCreated})
	r, _ := http.NewRequest("POST", "/greetings", strings.NewReader(`{"name":"a"}`))
	r.Header.Set("X-Who", "ann")
	resp, err := request.InMemory{Handler: h}.Do(r)
	require.NoError(t, err)
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, "/greetings/g1", resp.Header.Get("Location"))
	var g greeting
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&g))
	assert.Equal(t, "ann", g.Message)

	assert.Nil(t, request.HTTPRequest(context.Background()))
	assert.Empty(t, request.PathValue(context.Background(), "id"))
	assert.NotNil(t, request.ResponseHeader(context.Background()))
}

func TestHandlerDeadline(t *testing.T) {
	waits := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	}, &request.HandlerOptions{Logger: quiet})
	plainErr := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		<-ctx.Done()
		return struct{}{}, errBoom // not a context error: the deadline still decides
	}, &request.HandlerOptions{Logger: quiet})
	tests := []struct {
		name       string
		h          http.Handler
		timeout    string
		wantStatus int
		wantCode   string
	}{
		{"the caller's deadline passes: 504", waits, "1", 504, "deadline_exceeded"},
		{"a plain error after the deadline: 504", plainErr, "1", 504, "deadline_exceeded"},
		{"no time left for the margin: 504 at once", waits, "0", 504, "deadline_exceeded"},
		{"a malformed header: 400", waits, "soon", 400, "invalid_argument"},
		{"a negative header: 400", waits, "-5", 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			r.Header.Set(request.TimeoutHeader, tt.timeout)
			resp, err := request.InMemory{Handler: tt.h}.Do(r)
			require.NoError(t, err)
			d, ok := problem.Read(resp)
			require.True(t, ok)
			assert.Equal(t, tt.wantStatus, d.Status)
			assert.Equal(t, tt.wantCode, d.Extensions["code"])
		})
	}
}

func TestMaxTimeoutAppliesWhenTheCallerSendsNone(t *testing.T) {
	seen := make(chan bool, 1)
	withDefault := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		_, ok := ctx.Deadline()
		seen <- ok
		return struct{}{}, nil
	}, nil)
	noCap := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		_, ok := ctx.Deadline()
		seen <- ok
		return struct{}{}, nil
	}, &request.HandlerOptions{MaxTimeout: -1})
	send(t, withDefault, "GET", "/", "", "")
	assert.True(t, <-seen, "the default MaxTimeout gives every handler a deadline")
	send(t, noCap, "GET", "/", "", "")
	assert.False(t, <-seen, "a negative MaxTimeout and no header: no deadline")
}

// TestClientGoneIsLogged499 checks that a caller that goes away is logged
// as 499, never 408 or 504.
func TestClientGoneIsLogged499(t *testing.T) {
	var logs syncBuffer
	started := make(chan struct{})
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		close(started)
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	}, &request.HandlerOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Interceptors: []request.Interceptor{request.Logging(slog.New(slog.NewTextHandler(&logs, nil)))}})
	ctx, cancel := context.WithCancel(context.Background())
	c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: h}})
	errc := make(chan error, 1)
	go func() {
		_, err := request.Call[struct{}](ctx, c, "GET", "/", struct{}{})
		errc <- err
	}()
	<-started
	cancel()
	err := <-errc
	assert.ErrorIs(t, err, request.Canceled)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, logs.String(), "status=499")
	assert.NotContains(t, logs.String(), "status=408")
	assert.NotContains(t, logs.String(), "status=504")
}

func TestHandlerEncodeFailureIs500(t *testing.T) {
	h := request.NewHandler(func(context.Context, struct{}) (func(), error) { return func() {}, nil },
		&request.HandlerOptions{Logger: quiet})
	resp := send(t, h, "GET", "/", "", "")
	assert.Equal(t, 500, resp.StatusCode)
}

func TestClientReadsNonProblemFailures(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream fell over", http.StatusBadGateway)
	})
	c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: h}, Retry: noRetry()})
	_, err := request.Call[struct{}](testCtx(t), c, "GET", "/", struct{}{})
	var e *request.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, request.Unavailable, e.Code)
	assert.Equal(t, 502, e.HTTPStatus())
	assert.Equal(t, "upstream fell over", e.Message)
}

func TestClientRejectsBadResponses(t *testing.T) {
	tests := []struct {
		name string
		h    http.HandlerFunc
		opts request.ClientOptions
		want string
	}{
		{"a wrong content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<p>hi</p>"))
		}, request.ClientOptions{}, "Content-Type"},
		{"an oversized body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"message":"` + strings.Repeat("x", 100) + `"}`))
		}, request.ClientOptions{MaxResponseBytes: 50}, "larger than 50 bytes"},
		{"malformed JSON", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"message":`))
		}, request.ClientOptions{}, "decoding the response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Doer = request.InMemory{Handler: tt.h}
			c := request.NewClient("http://x", &o)
			_, err := request.Call[greeting](testCtx(t), c, "GET", "/", struct{}{})
			assert.ErrorIs(t, err, request.Internal)
			assert.ErrorContains(t, err, tt.want)
		})
	}
	// 204 and an empty 200 leave the response at its zero value.
	for _, status := range []int{http.StatusNoContent, http.StatusOK} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) })
		c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: h}})
		got, err := request.Call[greeting](testCtx(t), c, "DELETE", "/", struct{}{})
		assert.NoError(t, err, "status %d", status)
		assert.Zero(t, got)
	}
}

func TestClientEncodeFailure(t *testing.T) {
	c := request.NewClient("http://x", &request.ClientOptions{Doer: request.InMemory{Handler: http.NotFoundHandler()}})
	_, err := request.Call[struct{}](testCtx(t), c, "POST", "/", func() {})
	assert.ErrorIs(t, err, request.InvalidArgument)
	var je *json.UnsupportedTypeError
	assert.True(t, errors.As(err, &je))
}

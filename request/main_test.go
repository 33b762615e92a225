package request_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/request"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Types of the small API most tests serve.

type createGreeting struct {
	Name string `json:"name"`
}

func (c createGreeting) Validate() error {
	if strings.TrimSpace(c.Name) == "" {
		return request.Invalid(request.FieldError{Field: "name", Detail: "is required"})
	}
	return nil
}

type greeting struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

var quiet = slog.New(slog.DiscardHandler)

// testCtx bounds a wait on another goroutine so that a broken test fails
// instead of hanging; it is a deadline, never a sleep.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoMux serves POST /greetings and GET /greetings/{id}.
func echoMux(opts *request.HandlerOptions) *http.ServeMux {
	if opts == nil {
		opts = &request.HandlerOptions{Logger: quiet}
	}
	mux := http.NewServeMux()
	mux.Handle("POST /greetings", request.NewHandler(func(ctx context.Context, in createGreeting) (greeting, error) {
		return greeting{ID: "g1", Message: "hello, " + in.Name}, nil
	}, opts))
	mux.Handle("GET /greetings/{id}", request.NewHandler(func(ctx context.Context, _ struct{}) (greeting, error) {
		id := request.PathValue(ctx, "id")
		if id != "g1" {
			return greeting{}, request.Errorf(request.NotFound, "no greeting %q", id)
		}
		return greeting{ID: id, Message: "hello"}, nil
	}, opts))
	return mux
}

// transports runs f over the in-memory transport and over a real loopback
// server.
func transports(t *testing.T, h http.Handler, f func(t *testing.T, baseURL string, d request.Doer)) {
	t.Run("in-memory", func(t *testing.T) { f(t, "http://api.test", request.InMemory{Handler: h}) })
	t.Run("httptest", func(t *testing.T) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		f(t, srv.URL, srv.Client())
	})
}

// doerFunc adapts a function to a Doer.
type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

func noRetry() request.RetryPolicy { return request.RetryPolicy{MaxAttempts: 1} }

func send(t *testing.T, h http.Handler, method, path, contentType, body string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if body == "" {
		r = httptest.NewRequest(method, path, nil)
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var errBoom = errors.New("database password is hunter2")

// syncBuffer is a bytes.Buffer safe for the concurrent writes of loggers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

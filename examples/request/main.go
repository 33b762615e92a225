// Command request serves a small typed API with the request package and,
// with -call, acts as its client.
//
//	go run ./examples/request -addr 127.0.0.1:8080
//	curl -d '{"name":"ann"}' -H 'Content-Type: application/json' http://127.0.0.1:8080/greetings
//	curl http://127.0.0.1:8080/greetings/1
//	go run ./examples/request -addr 127.0.0.1:8080 -call
//
// -call creates a greeting (with an Idempotency-Key, so the POST is safe
// to retry), reads it back, asks for one that does not exist and sends an
// invalid request, printing what each returns, then exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/request"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address, or with -call the server's address")
	call := flag.Bool("call", false, "act as the client of a server at -addr, print the answers and exit")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *call {
		err = runClient(ctx, "http://"+*addr, http.DefaultClient, os.Stdout)
	} else {
		err = run(ctx, *addr, os.Stdout)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// CreateGreeting is the body of POST /greetings.
type CreateGreeting struct {
	Name string `json:"name"`
}

// Validate refuses an empty or overlong name.
func (c CreateGreeting) Validate() error {
	switch n := strings.TrimSpace(c.Name); {
	case n == "":
		return request.Invalid(request.FieldError{Field: "name", Detail: "is required"})
	case len(n) > 100:
		return request.Invalid(request.FieldError{Field: "name", Detail: "is longer than 100 bytes"})
	}
	return nil
}

// Greeting is what the API returns.
type Greeting struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

// greetings is the service: an in-memory table, bounded.
type greetings struct {
	mu   sync.Mutex
	byID map[string]Greeting // guarded by mu
}

const maxGreetings = 10000

func (g *greetings) create(ctx context.Context, in CreateGreeting) (Greeting, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.byID) >= maxGreetings {
		return Greeting{}, request.Errorf(request.Unavailable, "the greeting table is full")
	}
	out := Greeting{ID: strconv.Itoa(len(g.byID) + 1), Message: "hello, " + strings.TrimSpace(in.Name)}
	g.byID[out.ID] = out
	request.ResponseHeader(ctx).Set("Location", "/greetings/"+out.ID)
	return out, nil
}

func (g *greetings) get(ctx context.Context, _ struct{}) (Greeting, error) {
	id := request.PathValue(ctx, "id")
	g.mu.Lock()
	defer g.mu.Unlock()
	out, ok := g.byID[id]
	if !ok {
		return Greeting{}, request.Errorf(request.NotFound, "no greeting %q", id)
	}
	return out, nil
}

// handler is the API: typed handlers behind idempotency and coalescing.
func handler(logger *slog.Logger) http.Handler {
	svc := &greetings{byID: make(map[string]Greeting)}
	ics := []request.Interceptor{request.Logging(logger)}
	mux := http.NewServeMux()
	mux.Handle("POST /greetings", request.Idempotency(request.NewMemoryStore(nil), &request.IdempotencyOptions{Logger: logger})(
		request.NewHandler(svc.create, &request.HandlerOptions{Status: http.StatusCreated, Interceptors: ics, Logger: logger})))
	mux.Handle("GET /greetings/{id}", request.Coalesce(nil)(
		request.NewHandler(svc.get, &request.HandlerOptions{Interceptors: ics, Logger: logger})))
	return mux
}

// run serves the API on addr until ctx ends.
func run(ctx context.Context, addr string, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return serve(ctx, ln, out)
}

// serve serves the API on ln until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, ln net.Listener, out io.Writer) error {
	logger := slog.New(slog.NewTextHandler(out, nil))
	srv := &http.Server{Handler: handler(logger), ReadHeaderTimeout: 5 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Fprintf(out, "serving POST /greetings and GET /greetings/{id} at http://%s\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// runClient calls the API at baseURL through d and prints what it gets.
func runClient(ctx context.Context, baseURL string, d request.Doer, out io.Writer) error {
	c := request.NewClient(baseURL, &request.ClientOptions{Doer: d})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	created, err := request.Call[Greeting](ctx, c, "POST", "/greetings", CreateGreeting{Name: "ann"},
		request.IdempotencyKey(request.NewIdempotencyKey()))
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	fmt.Fprintf(out, "created %s: %s\n", created.ID, created.Message)

	got, err := request.Call[Greeting](ctx, c, "GET", "/greetings/"+created.ID, struct{}{})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	fmt.Fprintf(out, "got %s: %s\n", got.ID, got.Message)

	_, err = request.Call[Greeting](ctx, c, "GET", "/greetings/999999", struct{}{})
	fmt.Fprintf(out, "missing: not found=%v (%v)\n", errors.Is(err, request.NotFound), err)

	_, err = request.Call[Greeting](ctx, c, "POST", "/greetings", CreateGreeting{Name: " "})
	var e *request.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("invalid create: want an *request.Error, got %v", err)
	}
	fmt.Fprintf(out, "invalid: %s %d %v\n", e.Code, e.HTTPStatus(), e.Fields)
	return nil
}

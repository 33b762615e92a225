package request_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/switchboard-go/switchboard/request"
)

type CreateGreeting struct {
	Name string `json:"name"`
}

func (c CreateGreeting) Validate() error {
	if c.Name == "" {
		return request.Invalid(request.FieldError{Field: "name", Detail: "is required"})
	}
	return nil
}

type Greeting struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

// A typed endpoint, a client over the in-memory transport, and errors that
// keep their code across the wire.
func Example() {
	mux := http.NewServeMux()
	mux.Handle("POST /greetings", request.NewHandler(func(ctx context.Context, in CreateGreeting) (Greeting, error) {
		return Greeting{ID: "g1", Message: "hello, " + in.Name}, nil
	}, nil))
	mux.Handle("GET /greetings/{id}", request.NewHandler(func(ctx context.Context, _ struct{}) (Greeting, error) {
		return Greeting{}, request.Errorf(request.NotFound, "no greeting %s", request.PathValue(ctx, "id"))
	}, nil))

	c := request.NewClient("http://greeter", &request.ClientOptions{Doer: request.InMemory{Handler: mux}})
	ctx := context.Background()

	g, err := request.Call[Greeting](ctx, c, "POST", "/greetings", CreateGreeting{Name: "ann"})
	fmt.Println(g.Message, err)

	_, err = request.Call[Greeting](ctx, c, "GET", "/greetings/g9", struct{}{})
	fmt.Println(errors.Is(err, request.NotFound), err)

	_, err = request.Call[Greeting](ctx, c, "POST", "/greetings", CreateGreeting{})
	var e *request.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.HTTPStatus(), e.Fields)
	}
	// Output:
	// hello, ann <nil>
	// true request: not_found: no greeting g9
	// invalid_argument 400 [{name is required}]
}

// Idempotency keys make a POST safe to retry: the server runs it once per
// key and replays the outcome.
func ExampleIdempotency() {
	runs := 0
	create := request.NewHandler(func(ctx context.Context, in CreateGreeting) (Greeting, error) {
		runs++
		return Greeting{ID: fmt.Sprint("g", runs), Message: "hello, " + in.Name}, nil
	}, nil)
	h := request.Idempotency(request.NewMemoryStore(nil), nil)(create)

	c := request.NewClient("http://greeter", &request.ClientOptions{Doer: request.InMemory{Handler: h}})
	for range 2 {
		g, err := request.Call[Greeting](context.Background(), c, "POST", "/greetings",
			CreateGreeting{Name: "ann"}, request.IdempotencyKey("order-42"))
		fmt.Println(g.ID, err)
	}
	fmt.Println("runs:", runs)
	// Output:
	// g1 <nil>
	// g1 <nil>
	// runs: 1
}

// Resilience is layered on the Doer: a breaker per host around the
// network, hedged reads around that.
func ExampleNewBreaker() {
	var d request.Doer = http.DefaultClient
	d = request.NewBreaker(d, &request.BreakerOptions{Failures: 5})
	d = request.Hedge(d, &request.HedgeOptions{Delay: 0}) // default delay, 50ms
	c := request.NewClient("http://127.0.0.1:8080", &request.ClientOptions{
		Doer:  d,
		Retry: request.RetryPolicy{MaxAttempts: 3},
	})
	_ = c
	// Output:
}

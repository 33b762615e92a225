package poll_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
)

// A job server and a client that submits work and long-polls its result.
func ExampleNewJobsHandler() {
	jobs := poll.NewJobs(nil)
	defer jobs.Shutdown(context.Background())
	start := func(r *http.Request) (poll.Work, error) {
		return func(ctx context.Context, report func(float64, string)) (any, error) {
			report(0.5, "thinking")
			return map[string]int{"answer": 42}, nil
		}, nil
	}
	h := poll.NewJobsHandler(jobs, start, nil)
	mux := http.NewServeMux()
	mux.Handle("/jobs", h)
	mux.Handle("/jobs/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer h.Shutdown(context.Background())

	c := &poll.JobClient{Wait: 10 * time.Second}
	job, err := c.Do(context.Background(), srv.URL+"/jobs", "application/json", strings.NewReader("{}"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(job.Status, string(job.Result))
	// Output: succeeded {"answer":42}
}

// Long polling a topic: the first request gets what is retained, the
// next one waits after the cursor it got.
func ExampleNewLongPoll() {
	broker := pubsub.NewBroker(pubsub.History(100, time.Hour))
	defer broker.Close()
	lp := poll.NewLongPoll(broker, func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }, nil)
	mux := http.NewServeMux()
	mux.Handle("GET /updates/{topic}", lp)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer lp.Shutdown(context.Background())

	ctx := context.Background()
	broker.Publish(ctx, pubsub.Message{Topic: "orders.eu", Data: []byte("order 1")})
	c := &poll.LongPollClient{URL: srv.URL + "/updates/orders.*", FromOldest: true, Wait: 10 * time.Second}
	msgs, _ := c.Poll(ctx)
	for _, m := range msgs {
		fmt.Println(m.Topic, string(m.Data))
	}
	go broker.Publish(ctx, pubsub.Message{Topic: "orders.us", Data: []byte("order 2")})
	msgs, _ = c.Poll(ctx) // held until order 2 is published
	for _, m := range msgs {
		fmt.Println(m.Topic, string(m.Data))
	}
	// Output:
	// orders.eu order 1
	// orders.us order 2
}

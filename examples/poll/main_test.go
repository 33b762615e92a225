package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServesJobsAndLongPolling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(srvCtx, "127.0.0.1:0", time.Millisecond, func(a net.Addr) { addrs <- a }) }()
	base := "http://" + (<-addrs).String()

	c := &poll.JobClient{Wait: 10 * time.Second}
	job, err := c.Do(ctx, base+"/jobs?seconds=3", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.Status != poll.Succeeded || !strings.Contains(string(job.Result), "all done") {
		t.Fatalf("job = %+v, want succeeded with a result", job)
	}

	lp := &poll.LongPollClient{URL: base + "/updates/demo.%3E", FromOldest: true, Wait: 10 * time.Second}
	resp, err := http.Post(base+"/publish/demo.greetings", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	msgs, err := lp.Poll(ctx)
	if err != nil || len(msgs) != 1 || string(msgs[0].Data) != "hello" {
		t.Fatalf("Poll = %v, %v; want the message published", msgs, err)
	}

	resp, err = http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

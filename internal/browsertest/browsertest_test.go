package browsertest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCutterEndsTheRequestAndHoldsTheNext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started := make(chan struct{}, 2)
	c := &Cutter{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done() // a stream: runs until its request ends
	})}
	srv := httptest.NewServer(c)
	defer srv.Close()

	get := func(id string) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			req.Header.Set("Last-Event-ID", id)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		return done
	}
	first := get("")
	<-started
	release := c.Cut(t, ctx)
	<-first // the cut request ended

	second := get("7")
	require.Eventually(t, func() bool { return len(c.Header("Last-Event-ID")) == 2 }, 10*time.Second, time.Millisecond)
	select {
	case <-started:
		t.Fatal("the next request reached the handler before release")
	default:
	}
	release()
	<-started
	assert.Equal(t, []string{"", "7"}, c.Header("Last-Event-ID"))
	c.Cut(t, ctx)()
	<-second
}

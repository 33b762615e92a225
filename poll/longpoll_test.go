package poll_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
)

var epoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// testCtx bounds a test so that a broken handler fails instead of hanging;
// it is a deadline, never a sleep.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fromPath uses the {topic} path value; "secret.*" needs a token.
func fromPath(r *http.Request) (string, error) {
	topic := r.PathValue("topic")
	if strings.HasPrefix(topic, "secret.") {
		switch r.Header.Get("Authorization") {
		case "":
			return "", pubsub.ErrUnauthorized
		case "Bearer ok":
		default:
			return "", pubsub.ErrForbidden
		}
	}
	return topic, nil
}

type lpFixture struct {
	broker *pubsub.Broker
	clock  *clock.Fake
	h      *poll.LongPoll
	srv    *httptest.Server
}

func newLP(t *testing.T, history int, opts *poll.LongPollOptions) *lpFixture {
	t.Helper()
	f := &lpFixture{broker: pubsub.NewBroker(pubsub.History(history, 0)), clock: clock.NewFake(epoch)}
	var o poll.LongPollOptions
	if opts != nil {
		o = *opts
	}
	o.Clock = f.clock
	f.h = poll.NewLongPoll(f.broker, fromPath, &o)
	mux := http.NewServeMux()
	mux.Handle("/updates/{topic}", f.h)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		require.NoError(t, f.h.Shutdown(context.Background()))
		f.srv.Close()
		f.broker.Close()
	})
	return f
}

func (f *lpFixture) publish(t *testing.T, topic string, data ...string) []pubsub.Cursor {
	t.Helper()
	var cs []pubsub.Cursor
	for _, d := range data {
		c, err := f.broker.Publish(context.Background(), pubsub.Message{Topic: topic, Data: []byte(d)})
		require.NoError(t, err)
		cs = append(cs, c)
	}
	return cs
}

type answer struct {
	code int
	hdr  http.Header
	body poll.Response
	prob problem.Details
}

func (f *lpFixture) get(t *testing.T, ctx context.Context, topic string, q url.Values) answer {
	t.Helper()
	u := f.srv.URL + "/updates/" + url.PathEscape(topic)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode, hdr: resp.Header}
	if d, ok := problem.Read(resp); ok {
		a.prob = d
		return a
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&a.body))
	return a
}

// getAsync starts a request and returns its answer on a channel.
func (f *lpFixture) getAsync(t *testing.T, ctx context.Context, topic string, q url.Values) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		u := f.srv.URL + "/updates/" + url.PathEscape(topic) + "?" + q.Encode()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- answer{code: -1}
			return
		}
		defer resp.Body.Close()
		a := answer{code: resp.StatusCode, hdr: resp.Header}
		if d, ok := problem.Read(resp); ok {
			a.prob = d
		} else {
			_ = json.NewDecoder(resp.Body).Decode(&a.body)
		}
		out <- a
	}()
	return out
}

// held waits until n requests are held: each arms one timer on the fake
// clock once it has subscribed and found nothing waiting.
func (f *lpFixture) held(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	require.NoError(t, f.clock.BlockUntilTimers(ctx, n))
	require.Equal(t, n, f.h.Held())
}

func recvAnswer(t *testing.T, ctx context.Context, c <-chan answer) answer {
	t.Helper()
	select {
	case a := <-c:
		return a
	case <-ctx.Done():
		t.Fatal("no answer")
		return answer{}
	}
}

func datas(msgs []poll.Message) []string {
	out := []string{}
	for _, m := range msgs {
		out = append(out, string(m.Data))
	}
	return out
}

func TestLongPollAnswersAtOnceWhenBehind(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, nil)
	cs := f.publish(t, "orders.eu", "a", "b", "c")

	a := f.get(t, ctx, "orders.eu", url.Values{"cursor": {string(cs[0])}, "wait": {"30s"}})
	require.Equal(t, http.StatusOK, a.code)
	assert.Equal(t, "application/json", a.hdr.Get("Content-Type"))
	assert.Equal(t, "no-store", a.hdr.Get("Cache-Control"))
	assert.Equal(t, []string{"b", "c"}, datas(a.body.Messages))
	assert.Equal(t, cs[2], a.body.Cursor)
	m := a.body.Messages[0]
	assert.Equal(t, "orders.eu", m.Topic)
	assert.Equal(t, cs[1], m.Cursor)
	assert.NotEmpty(t, m.ID)
	assert.False(t, m.Time.IsZero())
	assert.Zero(t, f.h.Held(), "nothing held when behind")
}

func TestLongPollMaxCapsTheBatch(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, &poll.LongPollOptions{MaxMessages: 3})
	cs := f.publish(t, "t", "1", "2", "3", "4", "5")
	tests := []struct {
		name string
		max  string
		want []string
	}{
		{"max below the backlog", "2", []string{"2", "3"}},
		{"max above the server cap is capped", "50", []string{"2", "3", "4"}},
		{"no max takes the default, capped", "", []string{"2", "3", "4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{"cursor": {string(cs[0])}}
			if tt.max != "" {
				q.Set("max", tt.max)
			}
			a := f.get(t, ctx, "t", q)
			require.Equal(t, http.StatusOK, a.code)
			assert.Equal(t, tt.want, datas(a.body.Messages))
			assert.Equal(t, a.body.Messages[len(a.body.Messages)-1].Cursor, a.body.Cursor)
		})
	}
}

func TestLongPollHoldsUntilPublish(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, nil)
	cs := f.publish(t, "orders.eu", "old")

	got := f.getAsync(t, ctx, "orders.*", url.Values{"cursor": {string(cs[0])}, "wait": {"30s"}})
	f.held(t, ctx, 1)
	later := f.publish(t, "orders.eu", "new")

	a := recvAnswer(t, ctx, got)
	require.Equal(t, http.StatusOK, a.code)
	assert.Equal(t, []string{"new"}, datas(a.body.Messages))
	assert.Equal(t, later[0], a.body.Cursor)
}

func TestLongPollWithoutCursorStartsFromNowOrOldest(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, nil)
	f.publish(t, "t", "before")

	a := f.get(t, ctx, "t", url.Values{"from": {"oldest"}, "wait": {"0"}})
	require.Equal(t, http.StatusOK, a.code)
	assert.Equal(t, []string{"before"}, datas(a.body.Messages), "from=oldest replays history")

	got := f.getAsync(t, ctx, "t", url.Values{"wait": {"30s"}})
	f.held(t, ctx, 1)
	f.publish(t, "t", "after")
	a = recvAnswer(t, ctx, got)
	assert.Equal(t, []string{"after"}, datas(a.body.Messages), "no cursor starts from now")
}

func TestLongPollTimeoutAnswersNoMessagesAndTheSameCursor(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, &poll.LongPollOptions{MaxWait: 10 * time.Second})
	cs := f.publish(t, "t", "x")

	got := f.getAsync(t, ctx, "t", url.Values{"cursor": {string(cs[0])}, "wait": {"1h"}})
	f.held(t, ctx, 1)
	f.clock.Advance(10 * time.Second) // the cap; the jittered wait is at most that

	a := recvAnswer(t, ctx, got)
	require.Equal(t, http.StatusOK, a.code, "a wait that ends is a success")
	assert.Empty(t, a.body.Messages)
	assert.Equal(t, cs[0], a.body.Cursor)
	assert.Zero(t, f.h.Held())
}

// A client that starts without a cursor leaves with one even when nothing
// arrived, so what is published before its next poll still reaches it.
func TestLongPollWithoutCursorLeavesWithTheHead(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, nil)
	f.publish(t, "other", "unrelated")
	a := f.get(t, ctx, "t", url.Values{"wait": {"0"}})
	require.Equal(t, http.StatusOK, a.code)
	require.Empty(t, a.body.Messages)
	require.NotEmpty(t, a.body.Cursor, "an empty answer still carries where it ended")

	f.publish(t, "t", "between polls")
	a = f.get(t, ctx, "t", url.Values{"cursor": {string(a.body.Cursor)}, "wait": {"0"}})
	require.Equal(t, http.StatusOK, a.code)
	assert.Equal(t, []string{"between polls"}, datas(a.body.Messages))
}

func TestLongPollWaitZeroNeverHolds(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 100, nil)
	cs := f.publish(t, "t", "x")
	a := f.get(t, ctx, "t", url.Values{"cursor": {string(cs[0])}, "wait": {"0"}})
	require.Equal(t, http.StatusOK, a.code)
	assert.Empty(t, a.body.Messages)
	assert.Equal(t, cs[0], a.body.Cursor)
}

func TestLongPollGoneWhenHistoryNoLongerReachesTheCursor(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 2, nil)
	cs := f.publish(t, "t", "1", "2", "3", "4", "5")

	a := f.get(t, ctx, "t", url.Values{"cursor": {string(cs[0])}})
	require.Equal(t, http.StatusGone, a.code)
	assert.Equal(t, poll.GapProblemType, a.prob.Type)
	assert.Equal(t, string(cs[3]), a.prob.Extensions["oldest"], "where history now starts")
	assert.Equal(t, string(cs[0]), a.prob.Extensions["cursor"])
	assert.Equal(t, "trimmed", a.prob.Extensions["reason"])
	assert.Contains(t, a.prob.Detail, "from=oldest")

	// The resync the problem suggests.
	a = f.get(t, ctx, "t", url.Values{"from": {"oldest"}})
	assert.Equal(t, []string{"4", "5"}, datas(a.body.Messages))
}

func TestLongPollGoneForACursorOfAnotherBroker(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	other := pubsub.NewBroker(pubsub.History(10, 0))
	defer other.Close()
	c, err := other.Publish(ctx, pubsub.Message{Topic: "t", Data: []byte("x")})
	require.NoError(t, err)

	a := f.get(t, ctx, "t", url.Values{"cursor": {string(c)}})
	require.Equal(t, http.StatusGone, a.code)
	assert.Equal(t, "epoch", a.prob.Extensions["reason"])
}

func TestLongPollRefusesBadRequests(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	tests := []struct {
		name   string
		method string
		topic  string
		query  url.Values
		auth   string
		want   int
	}{
		{"POST is not allowed", http.MethodPost, "t", nil, "", http.StatusMethodNotAllowed},
		{"wait that is not a duration", "", "t", url.Values{"wait": {"soon"}}, "", http.StatusBadRequest},
		{"negative wait", "", "t", url.Values{"wait": {"-1s"}}, "", http.StatusBadRequest},
		{"max zero", "", "t", url.Values{"max": {"0"}}, "", http.StatusBadRequest},
		{"max not a number", "", "t", url.Values{"max": {"ten"}}, "", http.StatusBadRequest},
		{"unknown from", "", "t", url.Values{"from": {"yesterday"}}, "", http.StatusBadRequest},
		{"cursor with from=oldest", "", "t", url.Values{"cursor": {"x.1"}, "from": {"oldest"}}, "", http.StatusBadRequest},
		{"cursor no broker made", "", "t", url.Values{"cursor": {"garbage"}}, "", http.StatusBadRequest},
		{"invalid pattern", "", "a..b", nil, "", http.StatusBadRequest},
		{"hook: not authenticated", "", "secret.x", nil, "", http.StatusUnauthorized},
		{"hook: forbidden", "", "secret.x", nil, "Bearer nope", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := f.srv.URL + "/updates/" + tt.topic + "?" + tt.query.Encode()
			req, err := http.NewRequestWithContext(ctx, tt.method, u, nil)
			require.NoError(t, err)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			d, ok := problem.Read(resp)
			require.True(t, ok, "problem details for %s", u)
			assert.Equal(t, tt.want, resp.StatusCode, "status for %s: %s", u, d.Detail)
			assert.NotEmpty(t, d.Detail)
		})
	}
}

func TestLongPollShutdownAnswersHeldRequests(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	cs := f.publish(t, "t", "x")
	var got []<-chan answer
	for range 3 {
		got = append(got, f.getAsync(t, ctx, "t", url.Values{"cursor": {string(cs[0])}}))
	}
	f.held(t, ctx, 3)

	require.NoError(t, f.h.Shutdown(ctx))
	for _, g := range got {
		a := recvAnswer(t, ctx, g)
		assert.Equal(t, http.StatusOK, a.code)
		assert.Empty(t, a.body.Messages)
		assert.Equal(t, cs[0], a.body.Cursor)
	}
	a := f.get(t, ctx, "t", url.Values{"cursor": {string(cs[0])}})
	assert.Equal(t, http.StatusServiceUnavailable, a.code)
	assert.Equal(t, "1", a.hdr.Get("Retry-After"))
}

func TestLongPollEndsWhenTheClientGoesAway(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	reqCtx, cancel := context.WithCancel(ctx)
	got := f.getAsync(t, reqCtx, "t", url.Values{"wait": {"30s"}})
	f.held(t, ctx, 1)
	cancel()
	<-got
	require.Eventually(t, func() bool { return f.h.Held() == 0 && f.broker.Stats().Subscribers == 0 },
		10*time.Second, time.Millisecond, "the held request ends and unsubscribes")
}

func TestLongPollTooManyHeldIs503(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, &poll.LongPollOptions{MaxHeld: 1})
	first := f.getAsync(t, ctx, "t", url.Values{"wait": {"30s"}})
	f.held(t, ctx, 1)
	a := f.get(t, ctx, "t", url.Values{"wait": {"30s"}})
	assert.Equal(t, http.StatusServiceUnavailable, a.code)
	assert.Equal(t, "1", a.hdr.Get("Retry-After"))
	f.publish(t, "t", "x")
	assert.Equal(t, http.StatusOK, recvAnswer(t, ctx, first).code)
}

func TestLongPollBinaryDataRoundTrips(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	bin := []byte{0xff, 0x00, 0xfe}
	_, err := f.broker.Publish(ctx, pubsub.Message{Topic: "t", Data: bin})
	require.NoError(t, err)
	a := f.get(t, ctx, "t", url.Values{"from": {"oldest"}})
	require.Len(t, a.body.Messages, 1)
	assert.Equal(t, bin, a.body.Messages[0].Data)
}

// TestLongPollClientSeesEverythingOnceInOrder runs a client against
// publishers publishing concurrently: whatever the interleaving of polls
// and publishes, it sees every message once, in order per topic.
func TestLongPollClientSeesEverythingOnceInOrder(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10_000, nil)
	const publishers, each = 3, 200
	first := f.publish(t, "feed.start", "start")

	c := &poll.LongPollClient{URL: f.srv.URL + "/updates/feed.%3E", Cursor: first[0], Max: 7}
	seen := map[string]int{}
	last := map[string]int{}
	errDone := errors.New("done")
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				_, err := f.broker.Publish(ctx, pubsub.Message{Topic: fmt.Sprintf("feed.p%d", p), Data: []byte(strconv.Itoa(i))})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	err := c.Run(ctx, func(m poll.Message) error {
		key := m.Topic + "/" + string(m.Data)
		seen[key]++
		i, _ := strconv.Atoi(string(m.Data))
		if prev, ok := last[m.Topic]; ok && i != prev+1 {
			return fmt.Errorf("%s: got %d after %d", m.Topic, i, prev)
		}
		last[m.Topic] = i
		if len(seen) == publishers*each {
			return errDone
		}
		return nil
	})
	wg.Wait()
	require.ErrorIs(t, err, errDone)
	for k, n := range seen {
		assert.Equal(t, 1, n, "message %s seen %d times", k, n)
	}
}

func TestLongPollClientSurfacesGapAndResyncs(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 2, nil)
	cs := f.publish(t, "t", "1", "2", "3", "4")
	c := &poll.LongPollClient{URL: f.srv.URL + "/updates/t", Cursor: cs[0]}

	err := c.Run(ctx, func(poll.Message) error { return nil })
	var gap *poll.GapError
	require.ErrorAs(t, err, &gap)
	assert.ErrorIs(t, err, pubsub.ErrGap)
	assert.Equal(t, cs[0], gap.Cursor)
	assert.Equal(t, cs[2], gap.Oldest)

	c.Cursor, c.FromOldest = "", true
	msgs, err := c.Poll(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{"3", "4"}, datas(msgs))
	assert.Equal(t, cs[3], c.Cursor)
}

func TestLongPollClientBacksOffAndHonoursRetryAfter(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	cs := f.publish(t, "t", "x", "y")
	var mu sync.Mutex
	fails := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := fails > 0
		fails--
		mu.Unlock()
		if fail {
			w.Header().Set("Retry-After", "7")
			problem.Write(w, problem.New(http.StatusServiceUnavailable, "busy"))
			return
		}
		r.SetPathValue("topic", "t")
		f.h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	clk := clock.NewFake(epoch)
	c := &poll.LongPollClient{URL: srv.URL, Cursor: cs[0]}
	poll.SetLongPollClientClock(c, clk)

	got := make(chan error, 1)
	go func() {
		got <- c.Run(ctx, func(m poll.Message) error { return errors.New(string(m.Data)) })
	}()
	for range 2 {
		require.NoError(t, clk.BlockUntilTimers(ctx, 1))
		clk.Advance(7*time.Second - 1)
		require.Equal(t, 1, clk.Timers(), "waits the server's Retry-After")
		clk.Advance(1)
	}
	select {
	case err := <-got:
		assert.EqualError(t, err, "y")
		assert.Equal(t, cs[0], c.Cursor, "the failed message is delivered again next time")
	case <-ctx.Done():
		t.Fatal("Run did not return")
	}
}

func TestLongPollClientStopsOnRefusal(t *testing.T) {
	ctx := testCtx(t)
	f := newLP(t, 10, nil)
	c := &poll.LongPollClient{URL: f.srv.URL + "/updates/secret.x"}
	err := c.Run(ctx, func(poll.Message) error { return nil })
	var se *poll.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusUnauthorized, se.Code)
}

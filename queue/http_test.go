package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/queue"
)

func newServer(t *testing.T, opts queue.HandlerOptions) (*httptest.Server, *queue.Queue) {
	mem := queue.NewMemory(queue.MemoryOptions{})
	t.Cleanup(func() { mem.Close() })
	q, err := queue.New(mem, "jobs")
	require.NoError(t, err)
	opts.Queues = []*queue.Queue{q}
	srv := httptest.NewServer(queue.NewHandler(opts))
	t.Cleanup(srv.Close)
	return srv, q
}

func do(t *testing.T, method, url, contentType, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestHTTPRoundTrip(t *testing.T) {
	srv, _ := newServer(t, queue.HandlerOptions{})
	base := srv.URL + "/queues/jobs"

	resp, body := do(t, "POST", base+"/messages", "text/plain", "resize 42", "Queue-Header-Trace", "abc", "Queue-Priority", "2")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	var enq queue.EnqueueResult
	require.NoError(t, json.Unmarshal([]byte(body), &enq))
	require.NotEmpty(t, enq.ID)

	resp, body = do(t, "POST", base+"/receive?max=5&wait=1s&lease=30", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var rec struct {
		Messages []struct {
			ID      string
			Body    []byte
			Header  map[string]string
			Attempt int
			Receipt string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &rec))
	require.Len(t, rec.Messages, 1)
	m := rec.Messages[0]
	assert.Equal(t, enq.ID, m.ID)
	assert.Equal(t, "resize 42", string(m.Body))
	assert.Equal(t, map[string]string{"Trace": "abc", "Content-Type": "text/plain"}, m.Header)
	assert.Equal(t, 1, m.Attempt)

	resp, body = do(t, "POST", base+"/extend", "application/json", `{"receipt":"`+m.Receipt+`","lease":"1m"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	resp, body = do(t, "POST", base+"/ack", "application/json", `{"receipt":"`+m.Receipt+`"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	resp, body = do(t, "POST", base+"/ack", "application/json", `{"receipt":"`+m.Receipt+`"}`)
	require.Equal(t, http.StatusConflict, resp.StatusCode, "a second ack holds a stale receipt: %s", body)

	batch := `{"messages":[{"body":{"n":1}},{"body_base64":"AAE=","dedup_key":"k"},{"body":"x","dedup_key":"k"}]}`
	resp, body = do(t, "POST", base+"/messages", queue.BatchContentType, batch)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	assert.Contains(t, body, `"duplicate":true`)

	resp, body = do(t, "POST", base+"/receive?max=10", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.NoError(t, json.Unmarshal([]byte(body), &rec))
	require.Len(t, rec.Messages, 2)
	assert.Equal(t, `{"n":1}`, string(rec.Messages[0].Body))
	assert.Equal(t, []byte{0, 1}, rec.Messages[1].Body)
	resp, body = do(t, "POST", base+"/nack", "application/json", `{"receipt":"`+rec.Messages[0].Receipt+`","delay":0,"error":"later"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)
	resp, body = do(t, "POST", base+"/dead", "application/json", `{"receipt":"`+rec.Messages[1].Receipt+`","error":"bad bytes"}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, body)

	resp, body = do(t, "GET", base+"/dead", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, `"last_error":"bad bytes"`)
	resp, body = do(t, "GET", base, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, `"depth":1`)
	assert.Contains(t, body, `"dead":1`)
	resp, body = do(t, "POST", base+"/dead/redrive", "application/json", `{"all":true}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.JSONEq(t, `{"redriven":1}`, body)
	resp, _ = do(t, "POST", base+"/pause", "", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, body = do(t, "POST", base+"/receive", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"messages":[]}`, body)
	resp, _ = do(t, "POST", base+"/resume", "", "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	// A batch ack: one request for many receipts, each reported.
	resp, body = do(t, "POST", base+"/receive?max=10", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.NoError(t, json.Unmarshal([]byte(body), &rec))
	require.Len(t, rec.Messages, 2)
	receipts := `{"receipts":["` + rec.Messages[0].Receipt + `","` + m.Receipt + `","` + rec.Messages[1].Receipt + `"]}`
	resp, body = do(t, "POST", base+"/ack", "application/json", `{"receipt":"a","receipts":["b"]}`)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "receipt or receipts, not both: %s", body)
	resp, body = do(t, "POST", base+"/ack", "application/json", receipts)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.JSONEq(t, `{"acked":2,"failed":[{"index":1,"receipt":"`+m.Receipt+`","status":409,
		"detail":"stale receipt: the lease has passed or the message was delivered again"}]}`, body)
	resp, body = do(t, "GET", base, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, `"depth":0`)
	assert.Contains(t, body, `"in_flight":0`)
}

func TestHTTPBadInputGetsProblemDetails(t *testing.T) {
	srv, _ := newServer(t, queue.HandlerOptions{MaxBodySize: 24})
	base := srv.URL + "/queues/jobs"
	tests := []struct {
		name        string
		method, url string
		contentType string
		body        string
		header      []string
		want        int
	}{
		{"unknown queue", "POST", srv.URL + "/queues/nope/messages", "", "x", nil, 404},
		{"unknown route", "GET", srv.URL + "/elsewhere", "", "", nil, 404},
		{"body too large", "POST", base + "/messages", "", strings.Repeat("x", 25), nil, 413},
		{"bad delay header", "POST", base + "/messages", "", "x", []string{"Queue-Delay", "soon"}, 400},
		{"negative delay header", "POST", base + "/messages", "", "x", []string{"Queue-Delay", "-5s"}, 400},
		{"priority out of range", "POST", base + "/messages", "", "x", []string{"Queue-Priority", "99"}, 400},
		{"malformed batch", "POST", base + "/messages", queue.BatchContentType, "{", nil, 400},
		{"bad max", "POST", base + "/receive?max=lots", "", "", nil, 400},
		{"max over the bound", "POST", base + "/receive?max=100000", "", "", nil, 400},
		{"wait over the bound", "POST", base + "/receive?wait=1h", "", "", nil, 400},
		{"malformed ack", "POST", base + "/ack", "application/json", "[1]", nil, 400},
		{"ack without receipt", "POST", base + "/ack", "application/json", "{}", nil, 400},
		{"made-up receipt", "POST", base + "/ack", "application/json", `{"receipt":"zz"}`, nil, 400},
		{"stale receipt", "POST", base + "/ack", "application/json", `{"receipt":"1.X"}`, nil, 409},
		{"empty receipts", "POST", base + "/ack", "application/json", `{"receipts":[]}`, nil, 400},
		{"an empty receipt in a batch", "POST", base + "/ack", "application/json", `{"receipts":[""]}`, nil, 400},
		{"redrive without saying what", "POST", base + "/dead/redrive", "application/json", `{}`, nil, 400},
		{"bad dead limit", "GET", base + "/dead?limit=-1", "", "", nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
			require.NoError(t, err)
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Set(tt.header[i], tt.header[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			d, ok := problem.Read(resp)
			require.True(t, ok, "got status %d without problem details, want %d", resp.StatusCode, tt.want)
			assert.Equal(t, tt.want, resp.StatusCode, "got %d (%s), want %d", resp.StatusCode, d.Detail, tt.want)
			assert.NotEmpty(t, d.Detail)
		})
	}
}

type statusErr int

func (s statusErr) Error() string   { return "teapot" }
func (s statusErr) HTTPStatus() int { return int(s) }

func TestHTTPAuthorizeHook(t *testing.T) {
	srv, _ := newServer(t, queue.HandlerOptions{Authorize: func(r *http.Request, name string, op queue.Op) error {
		switch {
		case r.Header.Get("Authorization") == "":
			return queue.ErrUnauthorized
		case op == queue.OpAdmin:
			return queue.ErrForbidden
		case r.Header.Get("Authorization") == "teapot":
			return statusErr(418)
		}
		return nil
	}})
	base := srv.URL + "/queues/jobs"
	tests := []struct {
		name, method, url, auth string
		want                    int
	}{
		{"no credentials", "POST", base + "/messages", "", 401},
		{"admin refused", "GET", base, "token", 403},
		{"hook chooses the status", "POST", base + "/messages", "teapot", 418},
		{"allowed", "POST", base + "/messages", "token", 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, tt.url, "", "x", "Authorization", tt.auth)
			assert.Equal(t, tt.want, resp.StatusCode, body)
		})
	}
}

func TestHTTPReceiveEndsWhenTheClientGoesAway(t *testing.T) {
	srv, _ := newServer(t, queue.HandlerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+"/queues/jobs/receive?wait=20s", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	cancel()
	assert.True(t, errors.Is(<-done, context.Canceled))
}

package request_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/request"
)

type userKey struct{}

func TestInterceptorsOnBothSides(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	metrics := request.Metrics(func(_ context.Context, info *request.CallInfo, code request.Code, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, info.Side.String()+" "+info.Method+" "+info.Path+" "+string(code))
	})
	serverAuth := request.Auth(func(ctx context.Context, info *request.CallInfo) (context.Context, error) {
		tok := info.Header.Get("Authorization")
		if tok != "Bearer ann" {
			return ctx, request.Errorf(request.Unauthenticated, "who are you?")
		}
		return context.WithValue(ctx, userKey{}, "ann"), nil
	})
	clientAuth := func(tok string) request.Interceptor {
		return request.Auth(func(ctx context.Context, info *request.CallInfo) (context.Context, error) {
			info.Header.Set("Authorization", "Bearer "+tok)
			return ctx, nil
		})
	}
	var logs syncBuffer
	h := request.NewHandler(func(ctx context.Context, in createGreeting) (greeting, error) {
		return greeting{Message: "hello, " + ctx.Value(userKey{}).(string)}, nil
	}, &request.HandlerOptions{Interceptors: []request.Interceptor{
		request.Logging(slog.New(slog.NewTextHandler(&logs, nil))), metrics, serverAuth,
	}})

	ok := request.NewClient("http://x", &request.ClientOptions{
		Doer: request.InMemory{Handler: h}, Interceptors: []request.Interceptor{metrics, clientAuth("ann")},
	})
	got, err := request.Call[greeting](testCtx(t), ok, "POST", "/greetings", createGreeting{Name: "x"})
	require.NoError(t, err)
	assert.Equal(t, "hello, ann", got.Message)

	bad := request.NewClient("http://x", &request.ClientOptions{
		Doer: request.InMemory{Handler: h}, Interceptors: []request.Interceptor{metrics, clientAuth("eve")},
	})
	_, err = request.Call[greeting](testCtx(t), bad, "POST", "/greetings", createGreeting{Name: "x"})
	assert.ErrorIs(t, err, request.Unauthenticated)

	mu.Lock()
	assert.Equal(t, []string{
		"server POST /greetings ", "client POST /greetings ",
		"server POST /greetings unauthenticated", "client POST /greetings unauthenticated",
	}, seen)
	mu.Unlock()
	assert.Contains(t, logs.String(), "side=server method=POST path=/greetings status=200")
	assert.Contains(t, logs.String(), "status=401")
}

func TestRecoverInterceptorLetsOuterInterceptorsSeeAnError(t *testing.T) {
	var logs bytes.Buffer
	var code request.Code
	h := request.NewHandler(func(context.Context, struct{}) (struct{}, error) { panic("boom") },
		&request.HandlerOptions{Logger: quiet, Interceptors: []request.Interceptor{
			request.Metrics(func(_ context.Context, _ *request.CallInfo, c request.Code, _ time.Duration) { code = c }),
			request.Recover(slog.New(slog.NewTextHandler(&logs, nil))),
		}})
	resp := send(t, h, "GET", "/", "", "")
	assert.Equal(t, 500, resp.StatusCode)
	assert.Equal(t, request.Internal, code)
	assert.Contains(t, logs.String(), "boom")
}

func TestTimeoutInterceptor(t *testing.T) {
	h := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	}, &request.HandlerOptions{Logger: quiet, Interceptors: []request.Interceptor{request.Timeout(time.Nanosecond)}})
	resp := send(t, h, "GET", "/", "", "")
	assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)

	// On the client, the deadline travels to the server.
	var hdr string
	srv := request.NewHandler(func(ctx context.Context, _ struct{}) (struct{}, error) {
		hdr = request.HTTPRequest(ctx).Header.Get(request.TimeoutHeader)
		return struct{}{}, nil
	}, nil)
	c := request.NewClient("http://x", &request.ClientOptions{
		Doer: request.InMemory{Handler: srv}, Interceptors: []request.Interceptor{request.Timeout(time.Hour)},
	})
	_, err := request.Call[struct{}](testCtx(t), c, "GET", "/", struct{}{})
	require.NoError(t, err)
	assert.NotEmpty(t, hdr)
}

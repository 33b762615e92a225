package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/coder/websocket"

	"github.com/switchboard-go/switchboard/internal/problem"
	"github.com/switchboard-go/switchboard/pubsub"
)

// HandlerOption configures NewHandler.
type HandlerOption func(*handlerConfig)

type handlerConfig struct {
	origins     []string
	auth        func(r *http.Request) (string, error)
	compression bool
}

// OriginPatterns allows pages from other origins to connect. A browser's
// Origin must otherwise match the request's host. Each pattern is matched
// case-insensitively with path.Match against the origin's host
// ("*.example.com"), or against "scheme://host" when it contains "://".
// Default: none. A request without Origin (not from a browser) is allowed.
func OriginPatterns(patterns ...string) HandlerOption {
	return func(c *handlerConfig) { c.origins = append(c.origins, patterns...) }
}

// Authenticate is the auth hook: it runs before the upgrade and returns the
// connection's user ("" for anonymous). An error refuses the request with
// problem details, as pubsub.RefusalProblem maps it: pubsub.ErrUnauthorized
// is 401, pubsub.ErrForbidden 403, an error with HTTPStatus() int that
// status, anything else 403. Default: every request is anonymous.
func Authenticate(f func(r *http.Request) (user string, err error)) HandlerOption {
	return func(c *handlerConfig) { c.auth = f }
}

// Compression turns on permessage-deflate when the client offers it. It
// costs memory per connection and CPU per message; the default is off.
func Compression(on bool) HandlerOption { return func(c *handlerConfig) { c.compression = on } }

// NewHandler returns the http.Handler that upgrades GET requests to
// WebSocket connections served by h. Before the upgrade it refuses, with
// RFC 9457 problem details: a method other than GET (405), a request that
// is not a WebSocket handshake (426), a foreign Origin (403), a refusal of
// the auth hook (401/403), a hub that is shutting down (503).
func NewHandler(h *Hub, opts ...HandlerOption) http.Handler {
	var cfg handlerConfig
	for _, o := range opts {
		o(&cfg)
	}
	return &wsHandler{h: h, cfg: cfg}
}

type wsHandler struct {
	h   *Hub
	cfg handlerConfig
}

func (wh *wsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, "a WebSocket is opened with GET"))
		return
	}
	if !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		problem.Write(w, problem.New(http.StatusUpgradeRequired, "this endpoint speaks WebSocket only"))
		return
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		problem.Write(w, problem.New(http.StatusBadRequest, fmt.Sprintf("unsupported WebSocket version %q", v)))
		return
	}
	if r.Header.Get("Sec-WebSocket-Key") == "" {
		problem.Write(w, problem.New(http.StatusBadRequest, "missing Sec-WebSocket-Key"))
		return
	}
	if err := checkOrigin(r, wh.cfg.origins); err != nil {
		problem.Write(w, problem.New(http.StatusForbidden, err.Error()))
		return
	}
	user := ""
	if wh.cfg.auth != nil {
		var err error
		if user, err = wh.cfg.auth(r); err != nil {
			problem.Write(w, pubsub.RefusalProblem(err))
			return
		}
	}
	if wh.h.isClosing() {
		w.Header().Set("Retry-After", "1")
		problem.Write(w, problem.New(http.StatusServiceUnavailable, "the server is shutting down"))
		return
	}
	mode := websocket.CompressionDisabled
	if wh.cfg.compression {
		mode = websocket.CompressionContextTakeover
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // checkOrigin did it, with problem details
		CompressionMode:    mode,
	})
	if err != nil {
		return // Accept has answered
	}
	c.SetReadLimit(int64(wh.h.cfg.readLimit))
	_ = wh.h.Serve(r.Context(), wsConn{c}, user)
}

func (h *Hub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// headerHas reports whether a comma-separated header holds token.
func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("invalid Origin %q", origin)
	}
	if strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, err := path.Match(strings.ToLower(p), strings.ToLower(target)); err == nil && ok {
			return nil
		}
	}
	return fmt.Errorf("origin %q is not allowed to connect to %q", origin, r.Host)
}

// wsConn is the WebSocket transport of a Conn.
type wsConn struct{ c *websocket.Conn }

func (w wsConn) Read(ctx context.Context) ([]byte, error) {
	_, b, err := w.c.Read(ctx)
	if err != nil {
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &CloseError{Code: StatusCode(ce.Code), Reason: ce.Reason}
		}
		return nil, err
	}
	return b, nil
}

func (w wsConn) Write(ctx context.Context, frame []byte) error {
	return w.c.Write(ctx, websocket.MessageText, frame)
}

func (w wsConn) Ping(ctx context.Context) error { return w.c.Ping(ctx) }

func (w wsConn) Close(code StatusCode, reason string) error {
	if len(reason) > 120 { // a close frame holds 123 bytes of reason
		reason = reason[:120]
	}
	return w.c.Close(websocket.StatusCode(code), reason)
}

// DialError is Dial's error when the server refused the handshake.
type DialError struct {
	Status int    // the HTTP status of the refusal
	Detail string // the problem details' detail, or the status text
}

func (e *DialError) Error() string {
	return fmt.Sprintf("push: handshake refused with %d: %s", e.Status, e.Detail)
}

// DefaultClientReadLimit bounds the frames a client reads (ClientReadLimit).
const DefaultClientReadLimit = 4 << 20

// Dial opens a WebSocket connection to url ("ws://host/ws" or
// "wss://..."), the transport under Connect. It uses the WithHeader,
// WithHTTPClient and ClientReadLimit options and ignores the others. A
// refused handshake is a *DialError.
func Dial(ctx context.Context, url string, opts ...ClientOption) (Conn, error) {
	cfg := newClientConfig(opts)
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: cfg.httpClient,
		HTTPHeader: cfg.header,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			de := &DialError{Status: resp.StatusCode, Detail: http.StatusText(resp.StatusCode)}
			if d, ok := problem.Read(resp); ok && d.Detail != "" {
				de.Detail = d.Detail
			}
			if resp.Body != nil {
				resp.Body.Close()
			}
			return nil, de
		}
		return nil, err
	}
	c.SetReadLimit(int64(cfg.readLimit))
	return wsConn{c}, nil
}

package pubsub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/switchboard-go/switchboard/internal/problem"
)

// Errors a TopicFunc returns to refuse a request. A TopicFunc may also
// return an error with a method HTTPStatus() int to choose the status.
var (
	// ErrUnauthorized refuses with 401: the caller is not authenticated.
	ErrUnauthorized = errors.New("pubsub: unauthorized")
	// ErrForbidden refuses with 403: the caller may not use this topic.
	ErrForbidden = errors.New("pubsub: forbidden")
)

// TopicFunc decides the topic (or pattern) of an HTTP request, usually from
// its path (r.PathValue) or query. It is also the authorization hook: an
// error refuses the request before anything is published or streamed.
// ErrUnauthorized becomes 401, ErrForbidden 403, an invalid subject 400, an
// error with HTTPStatus() int that status; any other error 403 without its
// text.
type TopicFunc func(r *http.Request) (string, error)

// RefusalProblem turns a TopicFunc error into the problem details an HTTP
// adapter answers with. The SSE, push and polling adapters share it so a hook
// behaves the same everywhere.
func RefusalProblem(err error) problem.Details {
	var sc interface{ HTTPStatus() int }
	var se *SubjectError
	switch {
	case errors.As(err, &sc) && sc.HTTPStatus() >= 400 && sc.HTTPStatus() <= 599:
		return problem.New(sc.HTTPStatus(), err.Error())
	case errors.Is(err, ErrUnauthorized):
		return problem.New(http.StatusUnauthorized, "authentication required")
	case errors.As(err, &se):
		return problem.New(http.StatusBadRequest, se.Error())
	default:
		return problem.New(http.StatusForbidden, "not allowed")
	}
}

// DefaultMaxBodySize bounds the body the publish handler accepts.
const DefaultMaxBodySize = 1 << 20

// HandlerOption configures NewPublishHandler.
type HandlerOption func(*publishHandler)

// MaxBodySize bounds the request body; a larger one gets 413. Default
// DefaultMaxBodySize (1 MiB).
func MaxBodySize(n int64) HandlerOption {
	return func(h *publishHandler) {
		if n > 0 {
			h.maxBody = n
		}
	}
}

// PublishResult is the JSON body of a successful publish.
type PublishResult struct {
	Topic  string `json:"topic"`
	Cursor Cursor `json:"cursor"`
}

// NewPublishHandler returns an http.Handler that publishes each POST body
// to the topic that topic returns, and answers 200 with a PublishResult.
// The request's Content-Type, if any, travels in the message header under
// "Content-Type". Errors are RFC 9457 problem details: 405 for a method
// other than POST, 413 for a body over the limit, 400 for an invalid topic,
// 401/403 from the hook, 503 when the broker is closed.
//
//	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(broker,
//		func(r *http.Request) (string, error) { return r.PathValue("topic"), nil }))
func NewPublishHandler(p Publisher, topic TopicFunc, opts ...HandlerOption) http.Handler {
	h := &publishHandler{p: p, topic: topic, maxBody: DefaultMaxBodySize}
	for _, o := range opts {
		o(h)
	}
	return h
}

type publishHandler struct {
	p       Publisher
	topic   TopicFunc
	maxBody int64
}

func (h *publishHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		problem.Write(w, problem.New(http.StatusMethodNotAllowed, "use POST to publish"))
		return
	}
	name, err := h.topic(r)
	if err != nil {
		problem.Write(w, RefusalProblem(err))
		return
	}
	if name == "" {
		problem.Write(w, problem.New(http.StatusBadRequest, "no topic in the request"))
		return
	}
	if err := ValidateTopic(name); err != nil {
		problem.Write(w, problem.New(http.StatusBadRequest, err.Error()))
		return
	}
	if r.ContentLength > h.maxBody {
		problem.Write(w, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.maxBody)))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			problem.Write(w, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.maxBody)))
			return
		}
		problem.Write(w, problem.New(http.StatusBadRequest, "reading the body: "+err.Error()))
		return
	}
	m := Message{Topic: name, Data: body}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		m.Header = map[string]string{"Content-Type": ct}
	}
	c, err := h.p.Publish(r.Context(), m)
	switch {
	case err == nil:
	case errors.Is(err, ErrTooLarge):
		problem.Write(w, problem.New(http.StatusRequestEntityTooLarge, err.Error()))
		return
	case errors.Is(err, ErrInvalidSubject):
		problem.Write(w, problem.New(http.StatusBadRequest, err.Error()))
		return
	case errors.Is(err, ErrTooManyTopics):
		problem.Write(w, problem.New(http.StatusTooManyRequests, err.Error()))
		return
	case errors.Is(err, ErrClosed):
		problem.Write(w, problem.New(http.StatusServiceUnavailable, "the broker is closed"))
		return
	case r.Context().Err() != nil:
		return // the client went away; nothing was published
	default:
		problem.Write(w, problem.New(http.StatusServiceUnavailable, strings.TrimPrefix(err.Error(), "pubsub: ")))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(PublishResult{Topic: name, Cursor: c})
}

package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/internal/clock"
	"github.com/switchboard-go/switchboard/internal/ids"
	"github.com/switchboard-go/switchboard/poll"
	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/push"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/request"
	"github.com/switchboard-go/switchboard/sse"
)

//go:embed index.html
var page []byte

// Topics of the showcase on the broker.
const (
	activityTopics = "activity.>"       // the feed: activity.<panel>
	roomTopic      = "chat.room"        // the chat room
	presenceTopic  = "chat.presence"    // who is here: snapshots
	controlTopic   = "control.consumer" // the queue consumer's fix, to every node
	shopPrefix     = "shop."            // the pubsub panel's subjects live below it
	workQueue      = "work"             // the queue panel's queue
)

// watchedPatterns are the pubsub panel's subscriptions (below shopPrefix).
var watchedPatterns = []string{"orders.>", "orders.*.created", "orders.eu.*", "*.eu.>", "payments.>"}

// Bounds of the panels' own inputs.
const (
	maxChatText   = 500
	maxNameLen    = 32
	maxJobSteps   = 100
	maxBookingLen = 40
)

// server is one http.Server with every pattern's handler mounted on one
// ServeMux, over an engine that may outlive it.
type server struct {
	cfg  config
	eng  *engine
	log  *slog.Logger
	clk  clock.Clock
	ctx  context.Context    // ends when the server shuts down
	stop context.CancelFunc // ends ctx
	wg   sync.WaitGroup     // the server's own goroutines (followers, presence)

	hub      *push.Hub
	events   *sse.Handler
	updates  *poll.LongPoll
	jobs     *poll.Jobs
	jobsHTTP *poll.JobsHandler
	work     *queue.Queue
	worker   *queue.Worker
	workDone chan error // the worker's Run result

	fixed        atomic.Bool   // the queue consumer accepts "fail" messages
	presenceDirt chan struct{} // 1-slot: presence changed, publish a snapshot

	http *http.Server
	ln   net.Listener
	done chan error // Serve's result
}

// activity is one event of the feed, as JSON.
type activity struct {
	Kind    string `json:"kind"` // the panel: request, chat, jobs, queue, pubsub
	Node    string `json:"node"` // the node it happened on
	Text    string `json:"text"`
	Pattern string `json:"pattern,omitempty"` // pubsub: the subscription that matched
	Topic   string `json:"topic,omitempty"`   // pubsub: the subject published
}

// newServer builds every handler over eng and starts the goroutines the
// server owns; start serves it, shutdown ends it all.
func newServer(cfg config, eng *engine, logger *slog.Logger) (*server, error) {
	s := &server{cfg: cfg, eng: eng, log: logger, clk: clock.Real{}, presenceDirt: make(chan struct{}, 1)}
	s.ctx, s.stop = context.WithCancel(context.Background())

	hub, err := push.NewHub(eng.broker,
		push.OnMessage(s.chat),
		push.OnPresence(func(push.PresenceEvent) {
			select {
			case s.presenceDirt <- struct{}{}:
			default: // a snapshot is due already
			}
		}),
		push.CanSubscribe(func(_ context.Context, _ string, pattern string) error {
			if pattern != roomTopic && pattern != presenceTopic {
				return fmt.Errorf("only %s and %s", roomTopic, presenceTopic)
			}
			return nil
		}),
	)
	if err != nil {
		s.stop()
		return nil, err
	}
	s.hub = hub

	everything := func(*http.Request) (string, error) { return activityTopics, nil }
	s.events = sse.NewHandler(eng.broker, everything, sse.Retry(cfg.sseRetry))
	s.updates = poll.NewLongPoll(eng.broker, everything, &poll.LongPollOptions{DefaultWait: 25 * time.Second})

	s.jobs = poll.NewJobs(&poll.JobsOptions{Store: eng.store, Broker: eng.broker, Topic: "jobs", Limit: 8, TTL: 10 * time.Minute})
	s.jobsHTTP = poll.NewJobsHandler(s.jobs, s.startJob, &poll.JobsHandlerOptions{MaxBodySize: 1 << 10})

	if s.work, err = queue.New(eng.queues, workQueue); err != nil {
		_ = s.hub.Shutdown(context.Background())
		s.stop()
		return nil, err
	}
	s.worker = queue.NewWorker(s.work, s.consume, queue.WorkerOptions{
		Concurrency: 4,
		Wait:        5 * time.Second,
		MaxAttempts: 3,
		RetryBase:   50 * time.Millisecond,
		RetryMax:    200 * time.Millisecond,
		Timeout:     30 * time.Second,
		Logger:      logger,
	})
	s.workDone = make(chan error, 1)
	go func() { s.workDone <- s.worker.Run(context.Background()) }()

	s.goFollow(controlTopic, func(m pubsub.Message) { s.fixed.Store(string(m.Data) == "fixed") })
	for _, p := range watchedPatterns {
		s.goFollow(shopPrefix+p, func(m pubsub.Message) {
			topic := strings.TrimPrefix(m.Topic, shopPrefix)
			s.publishActivity(activity{Kind: "pubsub", Pattern: p, Topic: topic,
				Text: fmt.Sprintf("%s matched %s: %s", p, topic, clip(string(m.Data), 80))})
		})
	}
	s.wg.Add(1)
	go s.publishPresence()

	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// routes mounts every pattern's handler on one ServeMux.
func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /api/state", s.state)
	// request-response: a typed API.
	mux.Handle("POST /api/bookings", request.NewHandler(s.book, &request.HandlerOptions{
		Status: http.StatusCreated, ValidationStatus: http.StatusUnprocessableEntity, MaxBodyBytes: 4 << 10, Logger: s.log}))
	mux.Handle("POST /api/consumer", request.NewHandler(s.setConsumer, &request.HandlerOptions{MaxBodyBytes: 1 << 10, Logger: s.log}))
	// push: the chat.
	mux.Handle("GET /ws", push.NewHandler(s.hub, push.Authenticate(userName)))
	// server-sent events and long polling: the activity feed.
	mux.Handle("GET /events", s.events)
	mux.Handle("GET /updates", s.updates)
	// short polling: jobs.
	jobs := s.noteJobs(s.jobsHTTP)
	mux.Handle("/jobs", jobs)
	mux.Handle("/jobs/", jobs)
	// message queue: the library's HTTP adapter.
	mux.Handle("/queues/", s.noteQueue(queue.NewHandler(queue.HandlerOptions{Queues: []*queue.Queue{s.work}, MaxBodySize: 256 << 10})))
	// publish-subscribe: publish below shopPrefix.
	mux.Handle("POST /publish/{topic}", pubsub.NewPublishHandler(s.eng.broker,
		func(r *http.Request) (string, error) { return shopPrefix + r.PathValue("topic"), nil },
		pubsub.MaxBodySize(4<<10)))
	return mux
}

// start serves on ln until shutdown.
func (s *server) start(ln net.Listener) {
	s.ln = ln
	s.done = make(chan error, 1)
	go func() { s.done <- s.http.Serve(ln) }()
}

// shutdown ends the server gracefully: streams, sockets and held polls are
// told to go away (their clients reconnect and resume by cursor), the
// worker drains what it holds, jobs stop, then the HTTP server closes.
// The engine stays open.
func (s *server) shutdown(ctx context.Context) error {
	err := errors.Join(
		s.events.Shutdown(ctx),
		s.hub.Shutdown(ctx),
		s.updates.Shutdown(ctx),
		s.jobsHTTP.Shutdown(ctx),
		s.worker.Shutdown(ctx),
	)
	if e := <-s.workDone; e != nil && !errors.Is(e, context.Canceled) {
		err = errors.Join(err, e)
	}
	err = errors.Join(err, s.jobs.Shutdown(ctx))
	s.stop()
	s.wg.Wait()
	if s.done != nil {
		err = errors.Join(err, s.http.Shutdown(ctx))
		if e := <-s.done; !errors.Is(e, http.ErrServerClosed) {
			err = errors.Join(err, e)
		}
	}
	return err
}

// goFollow runs f for each message on pattern until the server stops.
func (s *server) goFollow(pattern string, f func(pubsub.Message)) {
	sub, err := s.eng.broker.Subscribe(s.ctx, pattern, pubsub.Overflow(pubsub.DropOldest))
	if err != nil {
		s.log.Error("subscribe", "pattern", pattern, "err", err)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer sub.Close()
		for {
			m, err := sub.Next(s.ctx)
			switch {
			case err == nil:
				f(m)
			case errors.Is(err, pubsub.ErrGap):
			default:
				return
			}
		}
	}()
}

// publishPresence publishes who is here each time it changes (coalesced):
// every node does, so each page replaces its list with the newest one.
func (s *server) publishPresence() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.presenceDirt:
		}
		body, _ := json.Marshal(map[string]any{"presence": s.hub.Presence()})
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		if _, err := s.hub.Publish(ctx, presenceTopic, body); err != nil && s.ctx.Err() == nil {
			s.log.Warn("publish presence", "err", err)
		}
		cancel()
	}
}

// publishActivity adds a to the feed.
func (s *server) publishActivity(a activity) {
	a.Node = s.cfg.node
	body, _ := json.Marshal(a)
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if _, err := s.eng.broker.Publish(ctx, pubsub.Message{Topic: "activity." + a.Kind, Data: body}); err != nil && s.ctx.Err() == nil {
		s.log.Warn("publish activity", "err", err)
	}
}

// state is GET /api/state: what the page shows about this node.
func (s *server) state(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"node":           s.cfg.node,
		"engine":         s.eng.name,
		"notes":          s.eng.notes,
		"consumer_fixed": s.fixed.Load(),
		"patterns":       watchedPatterns,
		"queue":          workQueue,
	})
}

// --- request-response -----------------------------------------------------

// BookingRequest is the body of POST /api/bookings.
type BookingRequest struct {
	Name    string `json:"name"`
	Room    string `json:"room"`
	Minutes int    `json:"minutes"`
}

// rooms are the rooms one can book.
var rooms = []string{"atlas", "borealis", "cosmos"}

// Validate lists every field that is wrong, so the page can show each
// error next to its field.
func (b BookingRequest) Validate() error {
	var fs []request.FieldError
	switch n := strings.TrimSpace(b.Name); {
	case n == "":
		fs = append(fs, request.FieldError{Field: "name", Detail: "is required"})
	case len(n) > maxBookingLen:
		fs = append(fs, request.FieldError{Field: "name", Detail: fmt.Sprintf("is longer than %d bytes", maxBookingLen)})
	}
	if !slices.Contains(rooms, b.Room) {
		fs = append(fs, request.FieldError{Field: "room", Detail: "must be one of " + strings.Join(rooms, ", ")})
	}
	if b.Minutes < 15 || b.Minutes > 240 || b.Minutes%15 != 0 {
		fs = append(fs, request.FieldError{Field: "minutes", Detail: "must be a multiple of 15 from 15 to 240"})
	}
	if len(fs) > 0 {
		return request.Invalid(fs...)
	}
	return nil
}

// Booking is what POST /api/bookings returns.
type Booking struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Room    string `json:"room"`
	Minutes int    `json:"minutes"`
	Node    string `json:"node"`
}

func (s *server) book(_ context.Context, in BookingRequest) (Booking, error) {
	b := Booking{ID: ids.New(), Name: strings.TrimSpace(in.Name), Room: in.Room, Minutes: in.Minutes, Node: s.cfg.node}
	s.publishActivity(activity{Kind: "request", Text: fmt.Sprintf("%s booked %s for %d minutes", b.Name, b.Room, b.Minutes)})
	return b, nil
}

// ConsumerRequest is the body of POST /api/consumer.
type ConsumerRequest struct {
	Fixed bool `json:"fixed"`
}

// ConsumerState is what POST /api/consumer returns.
type ConsumerState struct {
	Fixed bool `json:"fixed"`
}

// setConsumer deploys (or reverts) the queue consumer's fix on every node
// of the broker.
func (s *server) setConsumer(ctx context.Context, in ConsumerRequest) (ConsumerState, error) {
	state, text := "broken", "the queue consumer fails messages marked fail again"
	if in.Fixed {
		state, text = "fixed", "a fix for the queue consumer was deployed to every node"
	}
	if _, err := s.eng.broker.Publish(ctx, pubsub.Message{Topic: controlTopic, Data: []byte(state)}); err != nil {
		return ConsumerState{}, request.Errorf(request.Unavailable, "the broker refused the change: %v", err)
	}
	s.publishActivity(activity{Kind: "queue", Text: text})
	return ConsumerState(in), nil
}

// --- push -----------------------------------------------------------------

// userNameError is a refused name: 400 before the WebSocket upgrade.
type userNameError struct{ name string }

func (e *userNameError) Error() string {
	return fmt.Sprintf("name %q must be 1 to %d letters, digits, '-' or '_'", e.name, maxNameLen)
}
func (e *userNameError) HTTPStatus() int { return http.StatusBadRequest }

// userName is the chat's auth hook: the name in the query. A real service
// reads a session here.
func userName(r *http.Request) (string, error) {
	name := r.URL.Query().Get("name")
	if !validName(name) {
		return "", &userNameError{name}
	}
	return name, nil
}

func validName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// chatRequest is what the page sends over the socket.
type chatRequest struct {
	Op   string `json:"op"`           // "say" or "who"
	To   string `json:"to,omitempty"` // say: one user; "" for everyone
	Text string `json:"text,omitempty"`
}

// chatLine is a chat message as pages receive it.
type chatLine struct {
	From    string `json:"from"`
	To      string `json:"to,omitempty"`
	Text    string `json:"text"`
	Private bool   `json:"private,omitempty"`
}

// chat handles what pages send: "who" answers with the presence, "say"
// publishes to the room or sends to one user (and back to the sender).
func (s *server) chat(ctx context.Context, r *push.Request) ([]byte, error) {
	var in chatRequest
	if err := json.Unmarshal(r.Data, &in); err != nil {
		return nil, errors.New("not a chat request")
	}
	switch in.Op {
	case "who":
		return json.Marshal(map[string]any{"presence": s.hub.Presence()})
	case "say":
	default:
		return nil, fmt.Errorf("unknown op %q", in.Op)
	}
	text := strings.TrimSpace(in.Text)
	switch {
	case r.User == "":
		return nil, errors.New("anonymous users cannot speak")
	case text == "":
		return nil, errors.New("say something")
	case len(text) > maxChatText:
		return nil, fmt.Errorf("a message is at most %d bytes", maxChatText)
	}
	if in.To == "" {
		body, _ := json.Marshal(chatLine{From: r.User, Text: text})
		c, err := s.hub.Publish(ctx, roomTopic, body)
		if err != nil {
			return nil, err
		}
		s.publishActivity(activity{Kind: "chat", Text: fmt.Sprintf("%s to everyone: %s", r.User, clip(text, 80))})
		return json.Marshal(map[string]string{"cursor": string(c)})
	}
	if !validName(in.To) {
		return nil, fmt.Errorf("no user %q", in.To)
	}
	body, _ := json.Marshal(chatLine{From: r.User, To: in.To, Text: text, Private: true})
	if err := s.hub.SendUser(ctx, in.To, body); err != nil {
		return nil, err
	}
	if in.To != r.User {
		if err := s.hub.SendUser(ctx, r.User, body); err != nil {
			return nil, err
		}
	}
	s.publishActivity(activity{Kind: "chat", Text: fmt.Sprintf("%s sent %s a private message", r.User, in.To)})
	return []byte(`{"sent":true}`), nil
}

// --- short polling --------------------------------------------------------

// startJob is POST /jobs?steps=N: a job of N steps (default 20) of
// cfg.jobStep each.
func (s *server) startJob(r *http.Request) (poll.Work, error) {
	n := 20
	if v := r.URL.Query().Get("steps"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > maxJobSteps {
			return nil, fmt.Errorf("steps must be a whole number from 1 to %d", maxJobSteps)
		}
	}
	step := s.cfg.jobStep
	return func(ctx context.Context, report func(float64, string)) (any, error) {
		for i := 1; i <= n; i++ {
			if err := wait(ctx, s.clk, step); err != nil {
				return nil, err
			}
			report(float64(i)/float64(n), fmt.Sprintf("step %d of %d", i, n))
		}
		return map[string]any{"steps": n, "node": s.cfg.node}, nil
	}, nil
}

// noteJobs puts job starts and cancels in the feed.
func (s *server) noteJobs(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		switch {
		case r.Method == http.MethodPost && sw.status == http.StatusAccepted:
			id := w.Header().Get("Location")
			id = id[strings.LastIndexByte(id, '/')+1:]
			s.publishActivity(activity{Kind: "jobs", Text: "job " + id + " started"})
		case r.Method == http.MethodDelete && sw.status == http.StatusOK:
			s.publishActivity(activity{Kind: "jobs", Text: "job " + strings.TrimPrefix(r.URL.Path, "/jobs/") + " canceled"})
		}
	})
}

// --- message queue --------------------------------------------------------

// workItem is a message of the work queue.
type workItem struct {
	N    int  `json:"n"`
	Fail bool `json:"fail"`
}

// consume is the queue's handler: it works cfg.workDelay on each message
// and fails those marked fail until the fix is deployed.
func (s *server) consume(ctx context.Context, d queue.Delivery) error {
	var it workItem
	if err := json.Unmarshal(d.Body, &it); err != nil {
		return queue.Permanent(fmt.Errorf("not a work item: %w", err))
	}
	if err := wait(ctx, s.clk, s.cfg.workDelay); err != nil {
		return err
	}
	if it.Fail && !s.fixed.Load() {
		return fmt.Errorf("item %d: the consumer has a bug that fails it", it.N)
	}
	return nil
}

// noteQueue puts enqueues and redrives in the feed.
func (s *server) noteQueue(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		switch {
		case strings.HasSuffix(r.URL.Path, "/messages") && sw.status == http.StatusAccepted:
			s.publishActivity(activity{Kind: "queue", Text: "messages enqueued on " + workQueue})
		case strings.HasSuffix(r.URL.Path, "/dead/redrive") && sw.status == http.StatusOK:
			s.publishActivity(activity{Kind: "queue", Text: "dead letters of " + workQueue + " redriven"})
		}
	})
}

// --- small pieces ---------------------------------------------------------

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wait waits d on clk, or until ctx ends.
func wait(ctx context.Context, clk clock.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// clip cuts s to at most n bytes, at a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

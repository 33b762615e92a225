package request

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
)

// Record is what an idempotency Store keeps per key: the fingerprint of
// the request that took the key and, once it finished, its response.
type Record struct {
	// Fingerprint identifies the request (method, path and body); a later
	// request with the same key and another fingerprint is refused.
	Fingerprint string
	// Done is false while the first request is in flight.
	Done   bool
	Status int
	Header http.Header
	Body   []byte
}

// Store keeps idempotency records. Keys arrive already scoped to the
// caller's identity. Implementations are safe for concurrent use, and
// Begin is atomic: of two requests racing with one key, exactly one
// reserves it. NewMemoryStore is the in-memory Store; engine-backed stores
// (PostgreSQL, Redis) implement the same three methods.
type Store interface {
	// Begin reserves key for a request with fingerprint, for lease: a
	// reservation its owner never finishes (a crashed process) lapses
	// then. When key already has a live record, Begin reserves nothing
	// and returns that record and false.
	Begin(ctx context.Context, key, fingerprint string, lease time.Duration) (rec Record, reserved bool, err error)
	// Finish stores rec (Done) as the outcome of key, kept for ttl.
	Finish(ctx context.Context, key string, rec Record, ttl time.Duration) error
	// Abandon drops key's reservation, so the next request with the key
	// runs again.
	Abandon(ctx context.Context, key string) error
}

// ErrStoreFull is returned by a MemoryStore's Begin when it holds
// MaxRecords live records; the middleware answers 503 with Retry-After.
var ErrStoreFull = errors.New("request: idempotency store full")

// DefaultMaxRecords bounds a MemoryStore.
const DefaultMaxRecords = 10000

// MemoryStoreOptions configures NewMemoryStore. Zero fields mean the
// defaults.
type MemoryStoreOptions struct {
	// MaxRecords bounds the records kept, in flight and done. At the
	// bound, expired records are swept; if none has expired, new keys are
	// refused with ErrStoreFull (a refusal, never an eviction that would
	// silently let an operation run twice). Default DefaultMaxRecords.
	MaxRecords int
	// Clock times leases and TTLs. Default the real clock.
	Clock clock.Clock
}

// MemoryStore is the in-memory Store: the real one for a single process,
// and the one tests use. It is safe for concurrent use.
type MemoryStore struct {
	max   int
	clock clock.Clock

	mu      sync.Mutex
	records map[string]memRecord // guarded by mu
}

type memRecord struct {
	Record
	expires time.Time
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore. A nil opts means the
// defaults.
func NewMemoryStore(opts *MemoryStoreOptions) *MemoryStore {
	var o MemoryStoreOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	return &MemoryStore{max: o.MaxRecords, clock: clock.Or(o.Clock), records: make(map[string]memRecord)}
}

// Begin implements Store.
func (s *MemoryStore) Begin(_ context.Context, key, fingerprint string, lease time.Duration) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if r, ok := s.records[key]; ok && now.Before(r.expires) {
		return r.Record, false, nil
	}
	if len(s.records) >= s.max {
		for k, r := range s.records {
			if !now.Before(r.expires) {
				delete(s.records, k)
			}
		}
		if len(s.records) >= s.max {
			return Record{}, false, ErrStoreFull
		}
	}
	s.records[key] = memRecord{Record{Fingerprint: fingerprint}, now.Add(lease)}
	return Record{}, true, nil
}

// Finish implements Store.
func (s *MemoryStore) Finish(_ context.Context, key string, rec Record, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec.Done = true
	s.records[key] = memRecord{rec, s.clock.Now().Add(ttl)}
	return nil
}

// Abandon implements Store.
func (s *MemoryStore) Abandon(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, key)
	return nil
}

// Len reports how many records the store holds, expired ones not yet
// swept included.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

// Defaults and bounds of IdempotencyOptions.
const (
	DefaultIdempotencyTTL   = 24 * time.Hour
	DefaultIdempotencyLease = time.Minute
	MaxIdempotencyKeyLength = 255
)

// ReplayedHeader is set to "true" on a response replayed from the store.
const ReplayedHeader = "Idempotent-Replayed"

// IdempotencyOptions configures Idempotency. A nil *IdempotencyOptions,
// and every zero field, means the default.
type IdempotencyOptions struct {
	// TTL is how long a finished response is replayed. Default 24h.
	TTL time.Duration
	// Lease is how long a reservation holds while its request runs; a
	// request still running after it may be run a second time. Keep it
	// above the handlers' MaxTimeout. Default 1 minute.
	Lease time.Duration
	// Identity names the caller, so that one caller's key never replays
	// another's response. Default: the Authorization header (hashed), so
	// requests with the same credentials share keys; return the user id
	// from your authentication middleware's context to do better.
	Identity func(r *http.Request) string
	// MaxBodyBytes bounds the request body read for the fingerprint (413
	// over it) and the response kept for replay (a larger response is
	// sent but not kept: a retry runs again). Default 1 MiB.
	MaxBodyBytes int64
	// Logger receives store failures and responses too large to keep.
	// Default slog.Default().
	Logger *slog.Logger
}

// Idempotency returns server middleware that makes requests carrying an
// Idempotency-Key run once per (caller identity, key) and replay the first
// outcome to retries for TTL, with the header Idempotent-Replayed: true.
// While the first request is in flight, a retry gets 409 Conflict with
// Retry-After: 1; a request with the same key but another method, path or
// body gets 422. Requests without the header pass straight through.
//
// Outcomes below 500 are kept: they are answers, and replaying them is the
// point. A 5xx, a panic, or a caller that went away drops the reservation,
// so a retry runs the operation again.
func Idempotency(store Store, opts *IdempotencyOptions) func(http.Handler) http.Handler {
	var o IdempotencyOptions
	if opts != nil {
		o = *opts
	}
	if o.TTL <= 0 {
		o.TTL = DefaultIdempotencyTTL
	}
	if o.Lease <= 0 {
		o.Lease = DefaultIdempotencyLease
	}
	if o.Identity == nil {
		o.Identity = func(r *http.Request) string { return r.Header.Get("Authorization") }
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return &idempotencyHandler{next: next, store: store, o: o}
	}
}

type idempotencyHandler struct {
	next  http.Handler
	store Store
	o     IdempotencyOptions
}

func (m *idempotencyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(IdempotencyKeyHeader)
	if key == "" {
		m.next.ServeHTTP(w, r)
		return
	}
	fail := func(err error) { writeProblem(w, r, m.o.Logger, r.Context(), err) }
	if len(key) > MaxIdempotencyKeyLength {
		fail(Errorf(InvalidArgument, "%s longer than %d characters", IdempotencyKeyHeader, MaxIdempotencyKeyLength))
		return
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, m.o.MaxBodyBytes+1))
		if err != nil {
			fail(Errorf(InvalidArgument, "reading the body: %v", err))
			return
		}
		if int64(len(body)) > m.o.MaxBodyBytes {
			fail(tooLarge(m.o.MaxBodyBytes))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", r.Method, r.URL.RequestURI())
	h.Write(body)
	fp := hex.EncodeToString(h.Sum(nil))
	id := sha256.Sum256([]byte(m.o.Identity(r)))
	skey := hex.EncodeToString(id[:16]) + ":" + key

	rec, reserved, err := m.store.Begin(r.Context(), skey, fp, m.o.Lease)
	switch {
	case errors.Is(err, ErrStoreFull):
		fail(&Error{Code: Unavailable, Message: "too many operations in progress; retry later", RetryAfter: time.Second, Err: err})
		return
	case err != nil:
		m.o.Logger.Error("request: idempotency store", "error", err.Error())
		fail(&Error{Code: Unavailable, Message: "idempotency store unavailable", RetryAfter: time.Second, Err: err})
		return
	case !reserved && rec.Fingerprint != fp:
		fail(withStatus(http.StatusUnprocessableEntity, InvalidArgument,
			IdempotencyKeyHeader+" was already used for a different request"))
		return
	case !reserved && !rec.Done:
		fail(&Error{Code: Conflict, Message: "a request with this " + IdempotencyKeyHeader + " is still in progress", RetryAfter: time.Second})
		return
	case !reserved:
		hdr := w.Header()
		for k, v := range rec.Header {
			hdr[k] = append([]string(nil), v...)
		}
		hdr.Set(ReplayedHeader, "true")
		w.WriteHeader(rec.Status)
		_, _ = w.Write(rec.Body)
		return
	}

	cw := &captureWriter{ResponseWriter: w, max: m.o.MaxBodyBytes}
	bg := context.WithoutCancel(r.Context())
	finished := false
	defer func() {
		if !finished { // a panic is unwinding through here
			_ = m.store.Abandon(bg, skey)
		}
	}()
	m.next.ServeHTTP(cw, r)
	finished = true
	if !cw.wrote {
		cw.WriteHeader(http.StatusOK)
	}
	switch {
	case cw.status >= 500 || r.Context().Err() != nil:
		err = m.store.Abandon(bg, skey)
	case cw.overflow:
		m.o.Logger.Warn("request: response too large to keep for idempotent replay", "path", r.URL.Path, "limit", m.o.MaxBodyBytes)
		err = m.store.Abandon(bg, skey)
	default:
		err = m.store.Finish(bg, skey, Record{Fingerprint: fp, Done: true, Status: cw.status, Header: cw.header, Body: cw.body.Bytes()}, m.o.TTL)
	}
	if err != nil {
		m.o.Logger.Error("request: idempotency store", "error", err.Error())
	}
}

// captureWriter passes a response through and keeps a copy of it, up to
// max body bytes.
type captureWriter struct {
	http.ResponseWriter
	max      int64
	wrote    bool
	status   int
	header   http.Header
	body     bytes.Buffer
	overflow bool
}

func (c *captureWriter) WriteHeader(status int) {
	if c.wrote {
		return
	}
	c.wrote, c.status = true, status
	c.header = c.ResponseWriter.Header().Clone()
	c.header.Del("Date")
	c.ResponseWriter.WriteHeader(status)
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	if !c.overflow {
		if int64(c.body.Len()+len(p)) > c.max {
			c.overflow = true
			c.body = bytes.Buffer{}
		} else {
			c.body.Write(p)
		}
	}
	return c.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *captureWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

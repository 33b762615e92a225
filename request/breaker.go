package request

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
)

// ErrCircuitOpen is in the chain of the error a Breaker returns, instead
// of sending, while a host's circuit is open. That error is an *Error with
// code Unavailable; a Client does not retry it.
var ErrCircuitOpen = errors.New("request: circuit open")

// Defaults and bounds of BreakerOptions.
const (
	DefaultBreakerFailures = 5
	DefaultBreakerOpenFor  = 10 * time.Second
	DefaultBreakerMaxHosts = 1024
)

// State is the state of one host's circuit.
type State uint8

const (
	// Closed: requests flow; consecutive failures are counted.
	Closed State = iota
	// Open: requests fail at once with ErrCircuitOpen until OpenFor has
	// passed.
	Open
	// HalfOpen: a few probe requests are let through; a success closes
	// the circuit, a failure opens it again.
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "unknown"
}

// BreakerOptions configures NewBreaker. Zero fields mean the defaults.
type BreakerOptions struct {
	// Failures is how many consecutive failures open a closed circuit.
	// Default 5.
	Failures int
	// OpenFor is how long a circuit stays open before it lets probes
	// through. Default 10s.
	OpenFor time.Duration
	// Probes is how many requests a half-open circuit lets through at
	// once. Default 1.
	Probes int
	// MaxHosts bounds the circuits kept, one per host (URL.Host). Requests
	// to hosts beyond it pass through unguarded. Default 1024.
	MaxHosts int
	// IsFailure says whether an outcome counts against the host. Default:
	// an error, or a status of 500 or more other than 501. An outcome after
	// the request's own context ended is never counted.
	IsFailure func(resp *http.Response, err error) bool
	// OnStateChange, when set, is called (outside any lock) after a
	// host's circuit changes state: the hook for metrics and logs.
	OnStateChange func(host string, from, to State)
	// Clock times OpenFor. Default the real clock.
	Clock clock.Clock
}

// Breaker is a Doer that guards another with one circuit breaker per host:
// after Failures consecutive failures a host's circuit opens and requests
// to it fail at once, without load on the host, for OpenFor; then Probes
// requests test it, and their outcome closes or reopens the circuit. It is
// safe for concurrent use.
type Breaker struct {
	next Doer
	opts BreakerOptions

	mu    sync.Mutex
	hosts map[string]*circuit // guarded by mu
}

type circuit struct {
	state    State     // guarded by Breaker.mu
	failures int       // consecutive failures while closed; guarded by Breaker.mu
	openedAt time.Time // guarded by Breaker.mu
	probes   int       // probes in flight while half-open; guarded by Breaker.mu
}

// NewBreaker returns a Breaker that sends through next. A nil opts means
// the defaults.
func NewBreaker(next Doer, opts *BreakerOptions) *Breaker {
	b := &Breaker{next: next, hosts: make(map[string]*circuit)}
	if opts != nil {
		b.opts = *opts
	}
	o := &b.opts
	if o.Failures <= 0 {
		o.Failures = DefaultBreakerFailures
	}
	if o.OpenFor <= 0 {
		o.OpenFor = DefaultBreakerOpenFor
	}
	if o.Probes <= 0 {
		o.Probes = 1
	}
	if o.MaxHosts <= 0 {
		o.MaxHosts = DefaultBreakerMaxHosts
	}
	if o.IsFailure == nil {
		o.IsFailure = defaultIsFailure
	}
	o.Clock = clock.Or(o.Clock)
	return b
}

func defaultIsFailure(resp *http.Response, err error) bool {
	return err != nil || (resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented)
}

// State reports the state of host's circuit (Closed for a host not seen).
func (b *Breaker) State(host string) State {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.hosts[host]
	if c == nil {
		return Closed
	}
	if c.state == Open && !b.opts.Clock.Now().Before(c.openedAt.Add(b.opts.OpenFor)) {
		return HalfOpen
	}
	return c.state
}

// Do sends r unless its host's circuit is open.
func (b *Breaker) Do(r *http.Request) (*http.Response, error) {
	host := r.URL.Host
	probe, err := b.admit(host)
	if err != nil {
		return nil, err
	}
	resp, err := b.next.Do(r)
	if err != nil && r.Context().Err() != nil {
		b.settle(host, probe, nil) // the caller gave up: no verdict on the host
		return resp, err
	}
	failed := b.opts.IsFailure(resp, err)
	b.settle(host, probe, &failed)
	return resp, err
}

type transition struct {
	from, to State
}

func (b *Breaker) admit(host string) (probe bool, err error) {
	var tr *transition
	defer func() { b.notify(host, tr) }()
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.hosts[host]
	if c == nil {
		if len(b.hosts) >= b.opts.MaxHosts {
			return false, nil // untracked: pass through
		}
		c = &circuit{}
		b.hosts[host] = c
	}
	switch c.state {
	case Closed:
		return false, nil
	case Open:
		now := b.opts.Clock.Now()
		if reopen := c.openedAt.Add(b.opts.OpenFor); now.Before(reopen) {
			return false, &Error{Code: Unavailable, Message: "circuit open for " + host,
				RetryAfter: reopen.Sub(now), Err: ErrCircuitOpen}
		}
		c.state, c.probes = HalfOpen, 0
		tr = &transition{Open, HalfOpen}
	}
	if c.probes >= b.opts.Probes {
		return false, &Error{Code: Unavailable, Message: "circuit half-open for " + host + ", probe in flight", Err: ErrCircuitOpen}
	}
	c.probes++
	return true, nil
}

// settle records an outcome: failed nil means none.
func (b *Breaker) settle(host string, probe bool, failed *bool) {
	var tr *transition
	defer func() { b.notify(host, tr) }()
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.hosts[host]
	if c == nil {
		return
	}
	if probe {
		c.probes--
	}
	if failed == nil {
		return
	}
	switch {
	case c.state == Closed && *failed:
		c.failures++
		if c.failures >= b.opts.Failures {
			c.state, c.openedAt = Open, b.opts.Clock.Now()
			tr = &transition{Closed, Open}
		}
	case c.state == Closed:
		c.failures = 0
	case c.state == HalfOpen && probe && *failed:
		c.state, c.openedAt = Open, b.opts.Clock.Now()
		tr = &transition{HalfOpen, Open}
	case c.state == HalfOpen && probe:
		c.state, c.failures = Closed, 0
		tr = &transition{HalfOpen, Closed}
	}
}

func (b *Breaker) notify(host string, tr *transition) {
	if tr != nil && b.opts.OnStateChange != nil {
		b.opts.OnStateChange(host, tr.from, tr.to)
	}
}

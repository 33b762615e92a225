package request

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/switchboard-go/switchboard/internal/clock"
)

// Defaults and bounds of HedgeOptions.
const (
	DefaultHedgeDelay = 50 * time.Millisecond
	MaxHedges         = 4
)

// HedgeOptions configures Hedge. Zero fields mean the defaults.
type HedgeOptions struct {
	// Delay is how long an attempt may go unanswered before the next one
	// is sent. Default DefaultHedgeDelay (50ms); set it near the 95th
	// percentile of the endpoint's latency.
	Delay time.Duration
	// Hedges is how many extra attempts one request may send. Default 1,
	// at most MaxHedges (4).
	Hedges int
	// Clock times the delay. Default the real clock.
	Clock clock.Clock
}

// Hedge returns a Doer that hedges idempotent reads (GET and HEAD): when
// an attempt has not answered within Delay it sends another, up to Hedges
// more, takes the first answer that is not a failure (no error and a
// status below 500), and cancels the others. Every other request passes
// straight to next. Do returns once the losing attempts have ended, so it
// leaves nothing running; the winner's context ends when its body is
// closed. When every attempt fails, the last failure is returned.
//
// Hedging trades load for tail latency: with Hedges 1 and Delay at the
// 95th percentile, about 5% more requests are sent.
func Hedge(next Doer, opts *HedgeOptions) Doer {
	h := &hedger{next: next, delay: DefaultHedgeDelay, hedges: 1, clock: clock.Real{}}
	if opts != nil {
		if opts.Delay > 0 {
			h.delay = opts.Delay
		}
		if opts.Hedges > 0 {
			h.hedges = min(opts.Hedges, MaxHedges)
		}
		h.clock = clock.Or(opts.Clock)
	}
	return h
}

type hedger struct {
	next   Doer
	delay  time.Duration
	hedges int
	clock  clock.Clock
}

type hedgeResult struct {
	i    int
	resp *http.Response
	err  error
}

func (res hedgeResult) ok() bool { return res.err == nil && res.resp.StatusCode < 500 }

func (h *hedger) Do(r *http.Request) (*http.Response, error) {
	if (r.Method != http.MethodGet && r.Method != http.MethodHead) ||
		(r.Body != nil && r.Body != http.NoBody && r.GetBody == nil) {
		return h.next.Do(r)
	}
	ctx := r.Context()
	n := 1 + h.hedges
	results := make(chan hedgeResult, n)
	cancels := make([]context.CancelFunc, 0, n)
	launch := func() {
		actx, cancel := context.WithCancel(ctx)
		i := len(cancels)
		cancels = append(cancels, cancel)
		ar := r.Clone(actx)
		if r.GetBody != nil {
			if b, err := r.GetBody(); err == nil {
				ar.Body = b
			}
		}
		go func() {
			resp, err := h.next.Do(ar)
			results <- hedgeResult{i, resp, err}
		}()
	}

	launch()
	pending := 1
	timer := h.clock.NewTimer(h.delay)
	defer timer.Stop()
	var best hedgeResult
	won := false
	for pending > 0 && !won {
		var tick <-chan time.Time
		if len(cancels) < n && ctx.Err() == nil {
			tick = timer.C()
		}
		select {
		case res := <-results:
			pending--
			if best.resp != nil {
				closeBody(best.resp.Body)
				cancels[best.i]()
			}
			best, won = res, res.ok()
		case <-tick:
			launch()
			pending++
			if len(cancels) < n {
				timer.Reset(h.delay)
			}
		}
	}
	for i, cancel := range cancels {
		if i != best.i {
			cancel()
		}
	}
	for ; pending > 0; pending-- {
		if res := <-results; res.resp != nil {
			closeBody(res.resp.Body)
		}
	}
	if best.err != nil {
		cancels[best.i]()
		return nil, best.err
	}
	best.resp.Body = cancelOnClose{best.resp.Body, cancels[best.i]}
	return best.resp, nil
}

// cancelOnClose ends an attempt's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

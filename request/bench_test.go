package request_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/request"
)

// The benchmark's work: a small JSON request in, a small JSON response
// out, on both sides.

func greet(_ context.Context, in createGreeting) (greeting, error) {
	return greeting{ID: "g1", Message: "hello, " + in.Name}, nil
}

// greetAsking is greet after a look at its context, as a handler that
// calls a database or another service does: it pays for the timer of its
// deadline, which greet never asks for.
func greetAsking(ctx context.Context, in createGreeting) (greeting, error) {
	select {
	case <-ctx.Done():
		return greeting{}, ctx.Err()
	default:
		return greet(ctx, in)
	}
}

// baselineHandler is the hand-written near-limit equivalent of
// NewHandler(greet): bounded body, strict decoding, JSON answer.
func baselineHandler(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	var in createGreeting
	if err := dec.Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := greet(r.Context(), in)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// baselineCall is the hand-written equivalent of Call.
func baselineCall(ctx context.Context, d request.Doer, url string, in createGreeting) (greeting, error) {
	var out greeting
	body, err := json.Marshal(in)
	if err != nil {
		return out, err
	}
	r, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := d.Do(r)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return out, fmt.Errorf("status %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	_, _ = io.Copy(io.Discard, resp.Body)
	return out, err
}

func benchMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /typed", request.NewHandler(greet, nil))
	mux.Handle("POST /typed-nodeadline", request.NewHandler(greet, &request.HandlerOptions{MaxTimeout: -1}))
	mux.Handle("POST /typed-asks", request.NewHandler(greetAsking, nil))
	mux.HandleFunc("POST /baseline", baselineHandler)
	return mux
}

// BenchmarkRoundTrip compares a typed Call through NewHandler with the
// hand-written baseline, over loopback HTTP and over InMemory.
func BenchmarkRoundTrip(b *testing.B) {
	mux := benchMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	loop := srv.Client()
	loop.Transport.(*http.Transport).MaxIdleConnsPerHost = 16

	for _, tr := range []struct {
		name string
		base string
		d    request.Doer
	}{
		{"loopback", srv.URL, loop},
		{"in-memory", "http://bench", request.InMemory{Handler: mux}},
	} {
		in := createGreeting{Name: "ann"}
		ctx := context.Background()
		// Warm both paths up (connections, pools, heap), so that the
		// first sub-benchmark does not pay for it alone.
		warm := request.NewClient(tr.base, &request.ClientOptions{Doer: tr.d})
		for range 500 {
			_, err1 := request.Call[greeting](ctx, warm, "POST", "/typed", in)
			_, err2 := baselineCall(ctx, tr.d, tr.base+"/baseline", in)
			if err := errors.Join(err1, err2); err != nil {
				b.Fatal(err)
			}
		}
		// typed: the defaults, which give every handler a deadline
		// (MaxTimeout, 1 minute); typed-nodeadline: MaxTimeout -1, the
		// same work as the baseline; typed-asks: the defaults, and a
		// handler that asks its context, which builds the deadline's
		// timer.
		for _, path := range []string{"/typed", "/typed-nodeadline", "/typed-asks"} {
			b.Run(tr.name+path, func(b *testing.B) {
				c := request.NewClient(tr.base, &request.ClientOptions{Doer: tr.d})
				b.ReportAllocs()
				for b.Loop() {
					if _, err := request.Call[greeting](ctx, c, "POST", path, in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(tr.name+"/baseline", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := baselineCall(ctx, tr.d, tr.base+"/baseline", in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTripPaired times the two sides of each comparison in the
// same loop, one call of each per iteration (in turn first), and reports
// each side's mean time and their ratio. The sub-benchmarks of
// BenchmarkRoundTrip run one after the other, so on a shared machine each
// may meet another load; here the load weighs on both sides alike. Its
// ns/op is the two sides together; allocations per side are
// BenchmarkRoundTrip's.
func BenchmarkRoundTripPaired(b *testing.B) {
	mux := benchMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	loop := srv.Client()
	loop.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	mem := request.InMemory{Handler: mux}
	loopClient := request.NewClient(srv.URL, &request.ClientOptions{Doer: loop})
	memClient := request.NewClient("http://bench", &request.ClientOptions{Doer: mem})

	in := createGreeting{Name: "ann"}
	ctx := context.Background()
	typed := func(c *request.Client) func() error {
		return func() error {
			_, err := request.Call[greeting](ctx, c, "POST", "/typed", in)
			return err
		}
	}
	baseline := func(d request.Doer, base string) func() error {
		return func() error {
			_, err := baselineCall(ctx, d, base+"/baseline", in)
			return err
		}
	}
	for _, p := range []struct {
		name, a, b string
		fa, fb     func() error
	}{
		{"loopback", "typed", "baseline", typed(loopClient), baseline(loop, srv.URL)},
		{"in-memory", "typed", "baseline", typed(memClient), baseline(mem, "http://bench")},
		{"typed", "loopback", "in-memory", typed(loopClient), typed(memClient)},
	} {
		b.Run(p.name+"/"+p.a+"-vs-"+p.b, func(b *testing.B) {
			for range 500 { // warm up, as BenchmarkRoundTrip does
				if err := errors.Join(p.fa(), p.fb()); err != nil {
					b.Fatal(err)
				}
			}
			var da, db time.Duration
			n := 0
			timed := func(f func() error, d *time.Duration) {
				start := time.Now()
				if err := f(); err != nil {
					b.Fatal(err)
				}
				*d += time.Since(start)
			}
			b.ReportAllocs()
			for b.Loop() {
				if n%2 == 0 {
					timed(p.fa, &da)
					timed(p.fb, &db)
				} else {
					timed(p.fb, &db)
					timed(p.fa, &da)
				}
				n++
			}
			b.ReportMetric(float64(da.Nanoseconds())/float64(n), p.a+"-ns/op")
			b.ReportMetric(float64(db.Nanoseconds())/float64(n), p.b+"-ns/op")
			b.ReportMetric(float64(da)/float64(db), p.a+"/"+p.b)
		})
	}
}

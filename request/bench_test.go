package request_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchboard-go/switchboard/request"
)

// The benchmark's work: a small JSON request in, a small JSON response
// out, on both sides.

func greet(_ context.Context, in createGreeting) (greeting, error) {
	return greeting{ID: "g1", Message: "hello, " + in.Name}, nil
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
		// typed: the defaults, which give every handler a deadline
		// (MaxTimeout, 1 minute); typed-nodeadline: MaxTimeout -1, the
		// same work as the baseline.
		for _, path := range []string{"/typed", "/typed-nodeadline"} {
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

package sse_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/sse"
)

// gapAfterFirst is a subscription whose Next returns one message, whose
// next call (the handler's drain) reports a gap once (what a Relay's Reset
// does between the two calls), and which then ends.
type gapAfterFirst struct{ calls int }

func (s *gapAfterFirst) Subscribe(context.Context, string, ...pubsub.SubscribeOption) (pubsub.Subscription, error) {
	return s, nil
}

func (s *gapAfterFirst) Next(ctx context.Context) (pubsub.Message, error) {
	got, err := s.NextBatch(ctx, nil)
	if err != nil {
		return pubsub.Message{}, err
	}
	return got[0], nil
}

func (s *gapAfterFirst) NextBatch(ctx context.Context, buf []pubsub.Message) ([]pubsub.Message, error) {
	s.calls++
	switch s.calls {
	case 1:
		return append(buf, pubsub.Message{Topic: "t", Data: []byte("one"), Cursor: "e.1"}), nil
	case 2:
		return buf, &pubsub.GapError{Reason: "engine history lost"}
	default:
		return buf, pubsub.ErrClosed
	}
}

func (s *gapAfterFirst) Close() error { return nil }

func TestGapDuringDrainIsSent(t *testing.T) {
	h := sse.NewHandler(&gapAfterFirst{}, func(*http.Request) (string, error) { return "t", nil })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	d := sse.NewDecoder(rec.Body)
	var types []string
	for {
		e, err := d.Next()
		if err != nil {
			break
		}
		types = append(types, e.Type)
	}
	if len(types) != 2 || types[1] != sse.GapEvent {
		t.Fatalf("event types %q, want [message gap]: the gap reported while draining was dropped", types)
	}
}

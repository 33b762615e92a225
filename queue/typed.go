package queue

import (
	"context"
	"encoding/json"
	"fmt"
)

// Codec turns values into message bodies and back.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default Codec: encoding/json.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// Typed is a queue of values of type T, encoded with Codec (JSON when nil),
// over the byte-level Queue. Its zero Codec is ready to use:
//
//	emails := queue.Typed[Email]{Queue: q}
//	emails.Enqueue(ctx, Email{To: "ada@example.com"}, queue.Message{})
//	w := queue.NewWorker(q, emails.Handler(send), queue.WorkerOptions{})
type Typed[T any] struct {
	Queue *Queue
	Codec Codec
}

func (t Typed[T]) codec() Codec {
	if t.Codec == nil {
		return JSON
	}
	return t.Codec
}

// Enqueue encodes v and enqueues it. opts carries the delivery options
// (Delay, RunAt, DedupKey, Priority, Header); its Body is replaced.
func (t Typed[T]) Enqueue(ctx context.Context, v T, opts Message) (EnqueueResult, error) {
	body, err := t.codec().Marshal(v)
	if err != nil {
		return EnqueueResult{}, fmt.Errorf("queue: encoding %T: %w", v, err)
	}
	opts.Body = body
	return t.Queue.Enqueue(ctx, opts)
}

// Handler returns the Handler that decodes each body into a T and calls
// fn. A body that does not decode is a Permanent error: retrying cannot fix
// it, so the message goes straight to the dead-letter queue with the
// decoding error.
func (t Typed[T]) Handler(fn func(ctx context.Context, v T) error) Handler {
	c := t.codec()
	return func(ctx context.Context, d Delivery) error {
		var v T
		if err := c.Unmarshal(d.Body, &v); err != nil {
			return Permanent(fmt.Errorf("queue: decoding %T: %w", v, err))
		}
		return fn(ctx, v)
	}
}

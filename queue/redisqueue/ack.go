package redisqueue

import (
	"context"
	"fmt"

	"github.com/switchboard-go/switchboard/internal/batch"
	"github.com/switchboard-go/switchboard/queue"
)

// ackQueue bounds the acks waiting for the batcher; an Ack past it waits
// for room (or its context).
const ackQueue = 4 * queue.MaxBatch

// ackReq is one Ack waiting for the batcher.
type ackReq struct {
	p   string // the queue's key prefix
	r   receipt
	res chan error // buffered: the batcher never blocks on it
}

// Ack implements queue.Backend. Acks are batched: the backend's one
// batcher takes every ack waiting when it is free and settles them, per
// queue, in one script call, so that under load many acks cost one round
// trip and an ack alone costs one hop more than a direct call.
func (b *Backend) Ack(ctx context.Context, name string, r queue.Receipt) error {
	req, err := b.submitAck(ctx, name, r)
	if err != nil {
		return err
	}
	return b.acked(ctx, req)
}

// AckBatch implements queue.BatchAcker: the acks go to the batcher
// together, which settles them in one script call.
func (b *Backend) AckBatch(ctx context.Context, name string, rs []queue.Receipt) []error {
	return batch.Pipelined(len(rs), func(i int) (*ackReq, error) {
		return b.submitAck(ctx, name, rs[i])
	}, func(req *ackReq) error { return b.acked(ctx, req) })
}

// submitAck hands the ack of r to the batcher.
func (b *Backend) submitAck(ctx context.Context, name string, r queue.Receipt) (*ackReq, error) {
	if b.closed.Load() {
		return nil, queue.ErrClosed
	}
	rc, err := parseReceipt(r)
	if err != nil {
		return nil, err
	}
	req := &ackReq{p: b.prefix(name), r: rc, res: make(chan error, 1)}
	select {
	case b.acks <- req:
		return req, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.batched:
		return nil, queue.ErrClosed
	}
}

// acked waits for the batcher's outcome of req.
func (b *Backend) acked(ctx context.Context, req *ackReq) error {
	select {
	case err := <-req.res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.batched:
		select {
		case err := <-req.res:
			return err
		default:
			return queue.ErrClosed
		}
	}
}

// batchAcks is the ack batcher: it runs until Close, then answers what
// is left with ErrClosed.
func (b *Backend) batchAcks() {
	defer close(b.batched)
	batch := make([]*ackReq, 0, queue.MaxBatch)
	for {
		select {
		case req := <-b.acks:
			batch = append(batch[:0], req)
		case <-b.done:
			for {
				select {
				case req := <-b.acks:
					req.res <- queue.ErrClosed
				default:
					return
				}
			}
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case req := <-b.acks:
				batch = append(batch, req)
			default:
				break more
			}
		}
		b.flushAcks(batch)
		clear(batch)
	}
}

// flushAcks settles a batch, one script call per queue.
func (b *Backend) flushAcks(batch []*ackReq) {
	for len(batch) > 0 {
		p := batch[0].p
		args := make([]any, 0, 1+3*len(batch))
		args = append(args, p)
		mine := make([]*ackReq, 0, len(batch))
		rest := batch[:0]
		for _, req := range batch {
			if req.p != p {
				rest = append(rest, req)
				continue
			}
			mine = append(mine, req)
			args = append(args, req.r.level, req.r.sid, req.r.n)
		}
		batch = rest
		res, err := ackScript.Run(b.ctx, b.client, metaKey(p), args...).Int64Slice()
		if err == nil && len(res) != len(mine) {
			err = fmt.Errorf("unexpected reply of %d values for %d acks", len(res), len(mine))
		}
		for i, req := range mine {
			switch {
			case err != nil:
				req.res <- b.fail("ack", err)
			case res[i] != 1:
				req.res <- queue.ErrStaleReceipt
			default:
				req.res <- nil
			}
		}
	}
}

// PrefetchPerHandler implements queue.PrefetchAdvisor.
func (b *Backend) PrefetchPerHandler() int { return 10 }

package pgqueue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/internal/backoff"
)

// waiters are the Receives of this node waiting, by queue. A wake-up of a
// queue closes its channel: every receiver waiting on it looks again, and
// FOR UPDATE SKIP LOCKED shares out what is there.
type waiters struct {
	mu sync.Mutex
	m  map[string]*waitList // queues with receivers waiting; guarded by mu
}

// waitList is one queue's waiting receivers: ch is closed to wake them.
type waitList struct {
	ch   chan struct{}
	refs int // receivers holding this list; guarded by waiters.mu
}

// add registers a receiver of q; remove must follow.
func (w *waiters) add(q string) *waitList {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.m[q]
	if l == nil {
		l = &waitList{ch: make(chan struct{})}
		w.m[q] = l
	}
	l.refs++
	return l
}

func (w *waiters) remove(q string, l *waitList) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l.refs--
	if l.refs == 0 && w.m[q] == l {
		delete(w.m, q)
	}
}

// wake wakes every receiver of q.
func (w *waiters) wake(q string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l := w.m[q]; l != nil {
		close(l.ch)
		delete(w.m, q)
	}
}

// all wakes every receiver of every queue.
func (w *waiters) all() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for q, l := range w.m {
		close(l.ch)
		delete(w.m, q)
	}
}

// connectListener opens the LISTEN connection.
func (b *Backend) connectListener(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, b.listen)
	if err != nil {
		return nil, fmt.Errorf("pgqueue: connecting the listener: %w", err)
	}
	if _, err := conn.Exec(ctx, b.n.listen); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("pgqueue: LISTEN: %w", err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// listenLoop holds the node's LISTEN connection and wakes the receivers of
// each queue notified. When the connection fails it wakes every receiver
// (the engine may be gone: they find out on their next statement) and
// reconnects with backoff; every reconnection wakes every receiver again,
// because notifications sent meanwhile are lost. conn is the first connection,
// opened by New.
func (b *Backend) listenLoop(conn *pgx.Conn) {
	defer b.wg.Done()
	retry := backoff.NewRetrier(b.policy, b.clock)
	for {
		if conn != nil {
			b.wake.all()
			retry.Reset()
			for {
				note, err := conn.WaitForNotification(b.ctx)
				if err != nil {
					break
				}
				b.wake.wake(note.Payload)
			}
			closeConn(conn)
			conn = nil
			// The engine may be gone: let the receivers find out, and
			// fail over to their polls while the listener is away.
			b.wake.all()
		}
		if b.ctx.Err() != nil || retry.Next(b.ctx) != nil {
			return
		}
		conn, _ = b.connectListener(b.ctx) // a failure is retried after the next delay
	}
}

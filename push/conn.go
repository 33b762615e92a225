package push

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Conn is one bidirectional message connection: what the Hub and the Client
// need from a transport, and all they use of it. The WebSocket transport
// (NewHandler, Dial) and the in-memory one (Pipe) implement it.
//
// Read is called by one goroutine at a time; Write, Ping and Close may be
// called concurrently with Read and with each other.
type Conn interface {
	// Read returns the next text frame from the peer. After the connection
	// is closed it returns an error; CloseStatus of that error is the peer's
	// close code when the peer closed it.
	Read(ctx context.Context) ([]byte, error)
	// Write sends frame as one text frame.
	Write(ctx context.Context, frame []byte) error
	// Ping sends a ping and waits for the peer's pong. The pong is taken in
	// by a concurrent Read, which the Hub and the Client always have.
	Ping(ctx context.Context) error
	// Close sends a close frame with code and reason and releases the
	// connection. It unblocks every other call.
	Close(code StatusCode, reason string) error
}

// StatusCode is a WebSocket close code (RFC 6455 section 7.4). The Hub
// closes with the codes below; 4000–4999 are this package's own.
type StatusCode int

// Close codes the Hub and Client use.
const (
	// StatusNormalClosure: the connection ended normally (a client's Close).
	StatusNormalClosure StatusCode = 1000
	// StatusGoingAway: the server shuts down (Hub.Shutdown). Reconnect,
	// possibly to another node, and resume by cursor.
	StatusGoingAway StatusCode = 1001
	// StatusInvalidData: a frame was not the protocol's JSON.
	StatusInvalidData StatusCode = 1007
	// StatusMessageTooBig: a message exceeded the read limit.
	StatusMessageTooBig StatusCode = 1009
	// StatusTryAgainLater: the hub holds its MaxConns connections.
	StatusTryAgainLater StatusCode = 1013
	// StatusSlowConsumer: the connection fell further behind than its send
	// queue allows. Reconnect and resume by cursor: nothing is lost.
	StatusSlowConsumer StatusCode = 4000
	// StatusPingTimeout: the peer did not answer a ping in time.
	StatusPingTimeout StatusCode = 4001
	// StatusUserLimit: the user already holds MaxConnsPerUser connections.
	StatusUserLimit StatusCode = 4002
)

// CloseError is the error Read returns once the peer closed the connection
// with a close frame.
type CloseError struct {
	Code   StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("push: connection closed with status %d (%s)", e.Code, e.Reason)
}

// CloseStatus returns the close code carried by err, or -1 when err carries
// none.
func CloseStatus(err error) StatusCode {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// pipeBuffer is how many frames each direction of a Pipe holds before Write
// blocks, as a socket buffer would.
const pipeBuffer = 16

// Pipe returns the two ends of an in-memory connection: what one end writes
// the other reads, in order. Each direction buffers a few frames, then Write
// blocks until the peer reads (or ctx ends), as a socket does. A ping is
// answered when the peer's Read reaches it, so a peer that stops reading
// stops answering pings. Closing either end closes both: the peer's Read
// returns the buffered frames, then a *CloseError with the code.
func Pipe() (Conn, Conn) {
	sh := &pipeShared{done: make(chan struct{})}
	a := &pipeEnd{sh: sh, in: make(chan pipeFrame, pipeBuffer), pongs: make(chan struct{}, 1)}
	b := &pipeEnd{sh: sh, in: make(chan pipeFrame, pipeBuffer), pongs: make(chan struct{}, 1)}
	a.peer, b.peer = b, a
	return a, b
}

type pipeShared struct {
	once sync.Once
	done chan struct{} // closed by the first Close
	err  *CloseError   // written before done is closed
}

type pipeFrame struct {
	data []byte
	ping bool
}

type pipeEnd struct {
	sh    *pipeShared
	in    chan pipeFrame // frames for this end
	pongs chan struct{}  // pongs for this end's pings
	peer  *pipeEnd
}

func (p *pipeEnd) Read(ctx context.Context) ([]byte, error) {
	for {
		var f pipeFrame
		select {
		case f = <-p.in:
		default:
			select {
			case f = <-p.in:
			case <-p.sh.done:
				return nil, p.sh.err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if f.ping {
			select {
			case p.peer.pongs <- struct{}{}:
			default:
			}
			continue
		}
		return f.data, nil
	}
}

func (p *pipeEnd) send(ctx context.Context, f pipeFrame) error {
	select {
	case <-p.sh.done:
		return net.ErrClosed
	default:
	}
	select {
	case p.peer.in <- f:
		return nil
	case <-p.sh.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeEnd) Write(ctx context.Context, frame []byte) error {
	// Copy, as a socket does: the caller may reuse frame at once.
	return p.send(ctx, pipeFrame{data: append([]byte(nil), frame...)})
}

func (p *pipeEnd) Ping(ctx context.Context) error {
	select {
	case <-p.pongs: // a stale pong
	default:
	}
	if err := p.send(ctx, pipeFrame{ping: true}); err != nil {
		return err
	}
	select {
	case <-p.pongs:
		return nil
	case <-p.sh.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeEnd) Close(code StatusCode, reason string) error {
	closed := false
	p.sh.once.Do(func() {
		p.sh.err = &CloseError{Code: code, Reason: reason}
		close(p.sh.done)
		closed = true
	})
	if !closed {
		return net.ErrClosed
	}
	return nil
}

package pgpubsub

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/switchboard-go/switchboard/internal/backoff"
	"github.com/switchboard-go/switchboard/pubsub"
)

// feed is the node's one reader of the namespace: it holds the LISTEN
// connection, delivers what it learns into the relay in position order, and
// reconnects with backoff when the connection fails. conn is the first
// connection, opened by New.
func (b *Broker) feed(ctx context.Context, conn *pgx.Conn) {
	defer b.wg.Done()
	retry := backoff.NewRetrier(b.policy, nil)
	for {
		if conn != nil {
			err := b.follow(ctx, conn, retry)
			closeConn(conn)
			conn = nil
			if ctx.Err() != nil || errors.Is(err, pubsub.ErrClosed) {
				return
			}
		}
		if retry.Next(ctx) != nil {
			return
		}
		var err error
		if conn, _, _, err = b.connect(ctx); err != nil && ctx.Err() != nil {
			return
		}
	}
}

// follow catches up with the table, then delivers notifications until the
// connection fails or ctx ends.
func (b *Broker) follow(ctx context.Context, conn *pgx.Conn, retry *backoff.Retrier) error {
	if err := b.catchUp(ctx, conn); err != nil {
		return err
	}
	retry.Reset()
	for {
		note, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if err := b.handle(ctx, conn, note); err != nil {
			return err
		}
	}
}

// handle delivers the message a notification carries when it is the next
// position; anything else (a hole, a message too large to carry, another
// epoch) is settled by reading the table.
func (b *Broker) handle(ctx context.Context, conn *pgx.Conn, note *pgconn.Notification) error {
	pos, epoch, payload, err := parseNotice(note.Payload)
	if err != nil || epoch != b.relay.Epoch() {
		return b.catchUp(ctx, conn)
	}
	last := b.relay.Last().Lo
	switch {
	case pos <= last:
		return nil // read already
	case pos > last+1 || payload == "":
		// A position skipped by a rolled-back publish, or one this feed
		// missed: only the table can tell.
		return b.catchUp(ctx, conn)
	}
	var n notice
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return b.catchUp(ctx, conn)
	}
	return b.deliver(ctx, pubsub.Message{
		Topic: n.Topic, ID: n.ID, Time: time.UnixMicro(n.Time), Header: n.Header, Data: n.Data,
		Cursor: pubsub.MakeCursor(epoch, pubsub.Position{Lo: pos}),
	})
}

// parseNotice splits "<pos> <epoch>[ <json>]".
func parseNotice(s string) (pos uint64, epoch, payload string, err error) {
	num, rest, ok := strings.Cut(s, " ")
	if !ok {
		return 0, "", "", errBadNotice
	}
	if pos, err = strconv.ParseUint(num, 10, 64); err != nil {
		return 0, "", "", errBadNotice
	}
	epoch, payload, _ = strings.Cut(rest, " ")
	return pos, epoch, payload, nil
}

// catchUp reads the table after the relay's position until it has read
// everything committed. When retention dropped messages the feed had not
// read (it was away, or fell behind by more than MaxMessages), or the
// namespace was created again (a new epoch), it tells the relay, whose
// subscribers then report pubsub.ErrGap.
func (b *Broker) catchUp(ctx context.Context, conn *pgx.Conn) error {
	for {
		last := b.relay.Last()
		epoch, wm, msgs, err := b.read(ctx, conn, b.sql.read, last.Lo, feedPage)
		if err != nil {
			return err
		}
		if epoch != b.relay.Epoch() {
			b.relay.Reset(epoch, pubsub.Position{Lo: wm}, "epoch")
			continue // read the new history from its start
		}
		if last.Lo < wm {
			b.relay.Reset(epoch, pubsub.Position{Lo: wm}, "trimmed")
		}
		for _, m := range msgs {
			if err := b.deliver(ctx, m); err != nil {
				return err
			}
		}
		if len(msgs) < feedPage {
			return nil
		}
	}
}

// deliver hands m to the relay. A message the local fan-out refuses (it
// cannot track another topic) becomes a gap for the local subscribers,
// never a silent hole.
func (b *Broker) deliver(ctx context.Context, m pubsub.Message) error {
	err := b.relay.Deliver(ctx, m)
	if err == nil || ctx.Err() != nil || errors.Is(err, pubsub.ErrClosed) {
		return err
	}
	epoch, pos, perr := m.Cursor.Parse()
	if perr != nil {
		return perr
	}
	b.relay.Reset(epoch, pos, "local fan-out refused a message: "+err.Error())
	return nil
}

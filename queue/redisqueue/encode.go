package redisqueue

import (
	"errors"
	"strconv"
	"strings"

	"github.com/switchboard-go/switchboard/internal/wire"
	"github.com/switchboard-go/switchboard/queue"
)

// pack puts a message's header and body in one field value: a uvarint
// count of header pairs, each key and value uvarint-prefixed, then the body
// to the end. One field instead of one per header key costs Redis and the
// scripts less, and the scripts never need to look inside.
func pack(m *queue.Message) []byte {
	buf := make([]byte, 0, len(m.Body)+wire.HeaderSize(m.Header))
	return append(wire.AppendHeader(buf, m.Header), m.Body...)
}

var errCorrupt = errors.New("redisqueue: an entry is not a message of this package")

// unpack reads what pack wrote.
func unpack(s string) (map[string]string, []byte, error) {
	h, rest, ok := wire.CutHeader(s)
	if !ok {
		return nil, nil, errCorrupt
	}
	return h, []byte(rest), nil
}

// A receipt is "<priority>/<stream id>/<delivery>": the stream and entry
// the delivery came from, and the number of the delivery, which the lease
// record in Redis must still carry for the receipt to hold.
type receipt struct {
	level int
	sid   string // stream entry id, "ms-seq"
	n     int    // delivery number (the attempt)
}

func (r receipt) String() string {
	return strconv.Itoa(r.level) + "/" + r.sid + "/" + strconv.Itoa(r.n)
}

func parseReceipt(s queue.Receipt) (receipt, error) {
	bad := &queue.InvalidError{Arg: "receipt", Reason: "not a receipt of this backend"}
	lv, rest, ok1 := strings.Cut(string(s), "/")
	sid, n, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || !validStreamID(sid) {
		return receipt{}, bad
	}
	level, err1 := strconv.Atoi(lv)
	count, err2 := strconv.Atoi(n)
	if err1 != nil || err2 != nil || level < queue.MinPriority || level > queue.MaxPriority || count < 1 ||
		lv != strconv.Itoa(level) || n != strconv.Itoa(count) {
		return receipt{}, bad
	}
	return receipt{level: level, sid: sid, n: count}, nil
}

// validStreamID reports whether s is a full stream id, "ms-seq", in
// decimal.
func validStreamID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && digits(ms) && digits(seq)
}

func digits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// streamMillis returns the milliseconds part of a stream id.
func streamMillis(sid string) int64 {
	ms, _, _ := strings.Cut(sid, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}

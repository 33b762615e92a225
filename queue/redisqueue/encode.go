package redisqueue

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/switchboard-go/switchboard/queue"
)

// pack puts a message's header and body in one field value: a uvarint
// count of header pairs, each key and value uvarint-prefixed, then the body
// to the end. One field instead of one per header key costs Redis and the
// scripts less, and the scripts never need to look inside.
func pack(m *queue.Message) []byte {
	n := len(m.Body) + binary.MaxVarintLen32
	for k, v := range m.Header {
		n += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	buf := make([]byte, 0, n)
	buf = binary.AppendUvarint(buf, uint64(len(m.Header)))
	for k, v := range m.Header {
		buf = appendString(appendString(buf, k), v)
	}
	return append(buf, m.Body...)
}

func appendString(buf []byte, s string) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(s))), s...)
}

var errCorrupt = errors.New("redisqueue: an entry is not a message of this package")

// unpack reads what pack wrote.
func unpack(s string) (map[string]string, []byte, error) {
	n, w := uvarint(s)
	if w <= 0 || n > uint64(len(s)) {
		return nil, nil, errCorrupt
	}
	s = s[w:]
	var h map[string]string
	if n > 0 {
		h = make(map[string]string, n)
		for range n {
			var k, v string
			var ok bool
			if k, s, ok = cutString(s); !ok {
				return nil, nil, errCorrupt
			}
			if v, s, ok = cutString(s); !ok {
				return nil, nil, errCorrupt
			}
			h[k] = v
		}
	}
	return h, []byte(s), nil
}

func cutString(s string) (string, string, bool) {
	n, w := uvarint(s)
	if w <= 0 || n > uint64(len(s)-w) {
		return "", s, false
	}
	return s[w : w+int(n)], s[w+int(n):], true
}

func uvarint(s string) (uint64, int) {
	var x uint64
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<(7*i), i + 1
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	return 0, 0
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

// Package wire packs strings and string maps into one byte string, each
// prefixed with its length as a uvarint, and reads them back without
// copying: how the Redis backends keep a message's topic, id and header in
// one field value instead of one field per key.
package wire

import "encoding/binary"

// AppendString appends s, length-prefixed.
func AppendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// CutString reads a string that AppendString wrote at the start of s and
// returns it and the rest of s. It reports false when s does not start
// with one.
func CutString(s string) (v, rest string, ok bool) {
	n, w := uvarint(s)
	if w <= 0 || n > uint64(len(s)-w) {
		return "", s, false
	}
	return s[w : w+int(n)], s[w+int(n):], true
}

// HeaderSize bounds what AppendHeader appends for h.
func HeaderSize(h map[string]string) int {
	n := binary.MaxVarintLen32
	for k, v := range h {
		n += len(k) + len(v) + 2*binary.MaxVarintLen32
	}
	return n
}

// AppendHeader appends the number of pairs in h, then each key and value,
// length-prefixed.
func AppendHeader(dst []byte, h map[string]string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(h)))
	for k, v := range h {
		dst = AppendString(AppendString(dst, k), v)
	}
	return dst
}

// CutHeader reads a header that AppendHeader wrote at the start of s (nil
// for none) and returns it and the rest of s. It reports false when s does
// not start with one.
func CutHeader(s string) (h map[string]string, rest string, ok bool) {
	n, w := uvarint(s)
	if w <= 0 || n > uint64(len(s)) {
		return nil, s, false
	}
	s = s[w:]
	if n == 0 {
		return nil, s, true
	}
	h = make(map[string]string, n)
	for range n {
		var k, v string
		if k, s, ok = CutString(s); !ok {
			return nil, s, false
		}
		if v, s, ok = CutString(s); !ok {
			return nil, s, false
		}
		h[k] = v
	}
	return h, s, true
}

// uvarint is binary.Uvarint on a string, to read without copying.
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

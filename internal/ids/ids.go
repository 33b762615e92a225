// Package ids makes unique identifiers that sort by creation time, for
// message ids, job ids and idempotency records.
//
// An id is 128 bits, a 48-bit Unix time in milliseconds followed by 80
// random bits, written as 26 characters of Crockford base32
// (0123456789ABCDEFGHJKMNPQRSTVWXYZ): the layout and text of a ULID. Two ids
// made in different milliseconds compare, as plain strings, in the order of
// their times; [Time] reads the time back.
//
// [New] is the simple entry point: each call draws fresh bits from
// crypto/rand. A [Generator] is for hot paths and for callers that need
// order within a millisecond: it draws from a generator seeded once from
// crypto/rand, and ids it makes in the same millisecond are strictly
// increasing (the random part of the previous id plus one, as in ULID's
// monotonic mode). Ids are unique, not secret: never use them as tokens.
//
// The package depends on nothing outside the standard library.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"
)

// Len is the length of an id in characters.
const Len = 26

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// maxMillis is the largest timestamp an id holds (year 10889).
const maxMillis = 1<<48 - 1

// ErrInvalid is returned by Parse and Time for a string that is not an id.
var ErrInvalid = errors.New("ids: invalid id")

// New returns a new id for the current time, with 80 fresh random bits from
// crypto/rand. Ids from New made in the same millisecond are unique but in
// no particular order; use a Generator for order within a millisecond.
func New() string {
	var b [10]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	hi := millis(time.Now())<<16 | uint64(binary.BigEndian.Uint16(b[:2]))
	lo := binary.BigEndian.Uint64(b[2:])
	var buf [Len]byte
	return string(encode(buf[:0], hi, lo))
}

// millis returns t's Unix milliseconds, clamped to what an id can hold.
func millis(t time.Time) uint64 {
	ms := t.UnixMilli()
	switch {
	case ms < 0:
		return 0
	case ms > maxMillis:
		return maxMillis
	}
	return uint64(ms)
}

// encode appends the 26-character base32 text of the 128-bit value hi:lo,
// most significant digit first; the first digit carries the top 3 bits.
func encode(dst []byte, hi, lo uint64) []byte {
	var buf [Len]byte
	for i := Len - 1; i >= 0; i-- {
		buf[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return append(dst, buf[:]...)
}

// decoding maps an ASCII byte to its base32 digit, or 0xFF. Both cases are
// accepted; the canonical form, which New and Generator produce and which
// sorts by time, is upper case.
var decoding = func() (d [256]byte) {
	for i := range d {
		d[i] = 0xFF
	}
	for i := range len(alphabet) {
		d[alphabet[i]] = byte(i)
		d[alphabet[i]|0x20] = byte(i) // lower case; digits are unchanged
	}
	return d
}()

// Parse returns the 16 bytes (big-endian) of the id s. Lower-case letters
// are accepted; any other character outside the alphabet, a length other
// than 26, or a first character above '7' (more than 128 bits) returns
// ErrInvalid.
func Parse(s string) ([16]byte, error) {
	var out [16]byte
	if len(s) != Len {
		return out, ErrInvalid
	}
	var hi, lo uint64
	for i := range Len {
		d := decoding[s[i]]
		if d == 0xFF || (i == 0 && d > 7) {
			return out, ErrInvalid
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(d)
	}
	binary.BigEndian.PutUint64(out[:8], hi)
	binary.BigEndian.PutUint64(out[8:], lo)
	return out, nil
}

// Time returns the millisecond timestamp of the id s, in UTC.
func Time(s string) (time.Time, error) {
	b, err := Parse(s)
	if err != nil {
		return time.Time{}, err
	}
	ms := binary.BigEndian.Uint64(b[:8]) >> 16
	return time.UnixMilli(int64(ms)).UTC(), nil
}

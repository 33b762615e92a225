package queue

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReceiptRoundTrip(t *testing.T) {
	for _, c := range []struct {
		token uint64
		slot  int
	}{{0, 0}, {1, 1}, {^uint64(0), 1<<35 - 1}, {0x0123456789abcdef, 4096}} {
		r := Receipt(appendReceipt(nil, c.token, c.slot))
		require.Len(t, r, receiptLen)
		token, slot, err := parseReceipt(r)
		require.NoError(t, err)
		assert.Equal(t, c.token, token)
		assert.Equal(t, c.slot, slot)
		upper, _, err := parseReceipt(Receipt(strings.ToUpper(string(r))))
		require.NoError(t, err)
		assert.Equal(t, c.token, upper, "either case")
	}
}

func TestParseReceiptRefusesWhatItDidNotWrite(t *testing.T) {
	for _, r := range []Receipt{"", ".", "abc", ".12", "12.", "w1.1", "1.1.1", "g0000000000000.1", "zz.1", "1 .1"} {
		_, slot, err := parseReceipt(r)
		if err == nil {
			assert.Equal(t, -1, slot, "%q names no slot", r)
			continue
		}
		assert.ErrorIs(t, err, ErrInvalid, "%q", r)
	}
}

func TestParseReceiptFullWidthRefusesWhatTheShortPathWould(t *testing.T) {
	good := string(appendReceipt(nil, 12345, 678))
	for i := range len(good) {
		if i == tokenDigits {
			continue
		}
		bad := []byte(good)
		bad[i] = 'w' // not a base-32 digit
		_, slot, err := parseReceipt(Receipt(bad))
		if err == nil {
			assert.Equal(t, -1, slot, "digit %d", i)
			continue
		}
		assert.ErrorIs(t, err, ErrInvalid, "digit %d", i)
	}
	over := "g" + good[1:] // 65 bits
	_, _, err := parseReceipt(Receipt(over))
	assert.ErrorIs(t, err, ErrInvalid)
}

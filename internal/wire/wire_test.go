package wire

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		s      string
		header map[string]string
	}{
		{name: "empty", s: "", header: nil},
		{name: "plain", s: "orders.eu", header: map[string]string{"Content-Type": "text/plain"}},
		{name: "long string needs a two-byte length", s: strings.Repeat("x", 300), header: map[string]string{"": "", "k": strings.Repeat("v", 200)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendString(nil, tt.s)
			b = AppendHeader(b, tt.header)
			assert.LessOrEqual(t, len(b)-len(AppendString(nil, tt.s)), HeaderSize(tt.header))
			b = append(b, "tail"...)
			s, rest, ok := CutString(string(b))
			assert.True(t, ok)
			assert.Equal(t, tt.s, s)
			h, rest, ok := CutHeader(rest)
			assert.True(t, ok)
			if len(tt.header) == 0 {
				assert.Nil(t, h)
			} else {
				assert.Equal(t, tt.header, h)
			}
			assert.Equal(t, "tail", rest)
		})
	}
}

func TestCorruptInputIsRefused(t *testing.T) {
	for _, in := range []string{"", "\x05ab", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "\x02\x01k"} {
		_, _, ok := CutString(in)
		_, _, hok := CutHeader(in)
		assert.False(t, ok && hok, "input %q", in)
	}
	_, _, ok := CutHeader("\x02\x01k")
	assert.False(t, ok, "a header that claims two pairs and holds half of one")
	_, _, ok = CutString("\x05ab")
	assert.False(t, ok, "a string longer than what follows")
}

package pubsub_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/pubsub"
)

// subjectCase is one input to a validator: give, and whether it is valid.
type subjectCase struct {
	name string
	give string
	want bool // valid
}

// commonSubjectCases are judged the same by ValidateTopic and ValidatePattern:
// literal subjects, and everything wrong with a subject besides wildcards.
var commonSubjectCases = []subjectCase{
	{name: "one token", give: "orders", want: true},
	{name: "several tokens", give: "orders.eu.42", want: true},
	{name: "punctuation inside tokens", give: "a-b_c.$sys.x:y/z", want: true},
	{name: "mixed case", give: "Orders.EU", want: true},
	{name: "multi-byte UTF-8 tokens", give: "bestellungen.münchen.日本", want: true},
	{name: "exactly MaxSubjectLen bytes", give: longSubject(pubsub.MaxSubjectLen), want: true},

	{name: "empty subject", give: "", want: false},
	{name: "only a dot", give: ".", want: false},
	{name: "leading dot", give: ".a", want: false},
	{name: "trailing dot", give: "a.", want: false},
	{name: "empty token in the middle", give: "a..b", want: false},
	{name: "space inside a token", give: "a b", want: false},
	{name: "space as a token", give: "a. .b", want: false},
	{name: "trailing space", give: "a.b ", want: false},
	{name: "tab", give: "a\tb", want: false},
	{name: "newline", give: "a.b\n", want: false},
	{name: "carriage return", give: "a\rb", want: false},
	{name: "NUL", give: "a\x00b", want: false},
	{name: "DEL", give: "a\x7fb", want: false},
	{name: "C1 control NEL", give: "a\u0085b", want: false},
	{name: "no-break space", give: "a\u00a0b", want: false},
	{name: "line separator", give: "a.\u2028", want: false},
	{name: "ideographic space", give: "a\u3000b", want: false},
	{name: "invalid UTF-8 byte", give: "a.\xffb", want: false},
	{name: "truncated UTF-8 sequence", give: "a.\xc3", want: false},
	{name: "UTF-16 surrogate encoded in UTF-8", give: "a.\xed\xa0\x80", want: false},
	{name: "one byte over MaxSubjectLen", give: longSubject(pubsub.MaxSubjectLen + 1), want: false},

	{name: "star inside a token", give: "a.b*", want: false},
	{name: "star leading a token", give: "a.*b", want: false},
	{name: "double star", give: "a.**", want: false},
	{name: "greater-than inside a token", give: "a>b", want: false},
	{name: "greater-than trailing a token", give: "a.b>", want: false},
	{name: "double greater-than", give: "a.>>", want: false},
	{name: "star and greater-than in one token", give: "*>", want: false},
}

func TestValidateTopic(t *testing.T) {
	tests := append([]subjectCase{
		{name: "star token is a wildcard", give: "a.*", want: false},
		{name: "lone star", give: "*", want: false},
		{name: "greater-than token is a wildcard", give: "a.>", want: false},
		{name: "lone greater-than", give: ">", want: false},
		{name: "wildcard in the middle", give: "a.*.c", want: false},
	}, commonSubjectCases...)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValidator(t, pubsub.ValidateTopic, tt)
		})
	}
}

func TestValidatePattern(t *testing.T) {
	tests := append([]subjectCase{
		{name: "lone star", give: "*", want: true},
		{name: "lone greater-than", give: ">", want: true},
		{name: "star last", give: "a.*", want: true},
		{name: "star first", give: "*.b", want: true},
		{name: "star in the middle", give: "a.*.c", want: true},
		{name: "stars only", give: "*.*.*", want: true},
		{name: "greater-than last", give: "a.>", want: true},
		{name: "star then greater-than", give: "*.b.>", want: true},
		{name: "star right before greater-than", give: "*.>", want: true},

		{name: "greater-than not last", give: "a.>.c", want: false},
		{name: "greater-than first of two", give: ">.a", want: false},
		{name: "two greater-thans", give: ">.>", want: false},
		{name: "empty token after star", give: "*..a", want: false},
		{name: "empty token after greater-than", give: "a.>.", want: false},
		{name: "space next to star", give: "a. *", want: false},
	}, commonSubjectCases...)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValidator(t, pubsub.ValidatePattern, tt)
		})
	}
}

func checkValidator(t *testing.T, validate func(string) error, tt subjectCase) {
	t.Helper()
	err := validate(tt.give)
	if tt.want {
		assert.NoError(t, err, "subject %q", tt.give)
		return
	}
	require.Error(t, err, "subject %q", tt.give)
	assert.ErrorIs(t, err, pubsub.ErrInvalidSubject, "subject %q", tt.give)
	var se *pubsub.SubjectError
	if assert.True(t, errors.As(err, &se), "got %T, want *pubsub.SubjectError", err) {
		assert.Equal(t, tt.give, se.Subject)
		assert.NotEmpty(t, se.Reason)
	}
}

func TestIsWildcard(t *testing.T) {
	tests := []struct {
		name string
		give string
		want bool
	}{
		{name: "one literal token", give: "a", want: false},
		{name: "literal tokens", give: "orders.eu.42", want: false},
		{name: "lone star", give: "*", want: true},
		{name: "lone greater-than", give: ">", want: true},
		{name: "star first", give: "*.b", want: true},
		{name: "star in the middle", give: "a.*.c", want: true},
		{name: "star last", give: "a.*", want: true},
		{name: "greater-than last", give: "a.b.>", want: true},
		{name: "both wildcards", give: "*.>", want: true},
		{name: "star inside a token is not a wildcard", give: "a*.b", want: false},
		{name: "greater-than inside a token is not a wildcard", give: "a.b>", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, pubsub.IsWildcard(tt.give), "IsWildcard(%q)", tt.give)
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		topic   string
		want    bool
	}{
		{name: "literal equals itself", pattern: "a.b.c", topic: "a.b.c", want: true},
		{name: "literal one token", pattern: "a", topic: "a", want: true},
		{name: "literal differs in a token", pattern: "a.b.c", topic: "a.x.c", want: false},
		{name: "literal is not a prefix match", pattern: "a.b", topic: "a.b.c", want: false},
		{name: "literal longer than topic", pattern: "a.b.c", topic: "a.b", want: false},
		{name: "literal token is not a string prefix", pattern: "a.b", topic: "a.bc", want: false},
		{name: "literal token is not a string suffix", pattern: "a.bc", topic: "a.b", want: false},
		{name: "literal is case sensitive", pattern: "a.B", topic: "a.b", want: false},
		{name: "literal multi-byte tokens", pattern: "ü.日本", topic: "ü.日本", want: true},

		{name: "star matches one token", pattern: "a.*", topic: "a.b", want: true},
		{name: "star does not match zero tokens", pattern: "a.*", topic: "a", want: false},
		{name: "star does not match two tokens", pattern: "a.*", topic: "a.b.c", want: false},
		{name: "lone star matches a one-token topic", pattern: "*", topic: "a", want: true},
		{name: "lone star does not match two tokens", pattern: "*", topic: "a.b", want: false},
		{name: "star first", pattern: "*.b", topic: "x.b", want: true},
		{name: "star first with wrong literal", pattern: "*.b", topic: "x.c", want: false},
		{name: "star in the middle", pattern: "a.*.c", topic: "a.b.c", want: true},
		{name: "star in the middle with wrong last token", pattern: "a.*.c", topic: "a.b.d", want: false},
		{name: "star in the middle with topic too short", pattern: "a.*.c", topic: "a.c", want: false},
		{name: "star in the middle with topic too long", pattern: "a.*.c", topic: "a.b.c.d", want: false},
		{name: "stars match any tokens of the same count", pattern: "*.*.*", topic: "x.y.z", want: true},
		{name: "stars do not match fewer tokens", pattern: "*.*.*", topic: "x.y", want: false},
		{name: "star matches a literal star-like token", pattern: "a.*", topic: "a.b-c", want: true},

		{name: "greater-than matches one token", pattern: "a.>", topic: "a.b", want: true},
		{name: "greater-than matches many tokens", pattern: "a.>", topic: "a.b.c.d", want: true},
		{name: "greater-than does not match zero tokens", pattern: "a.>", topic: "a", want: false},
		{name: "greater-than after wrong literal", pattern: "a.>", topic: "b.c", want: false},
		{name: "lone greater-than matches one token", pattern: ">", topic: "a", want: true},
		{name: "lone greater-than matches many tokens", pattern: ">", topic: "a.b.c", want: true},
		{name: "star then greater-than", pattern: "*.b.>", topic: "a.b.c", want: true},
		{name: "star then greater-than with many tokens", pattern: "*.b.>", topic: "a.b.c.d.e", want: true},
		{name: "star then greater-than needs a token after b", pattern: "*.b.>", topic: "a.b", want: false},
		{name: "star then greater-than with wrong literal", pattern: "*.b.>", topic: "a.c.d", want: false},
		{name: "star right before greater-than needs two tokens", pattern: "*.>", topic: "a", want: false},
		{name: "star right before greater-than", pattern: "*.>", topic: "a.b", want: true},
		{name: "greater-than is not a string prefix match", pattern: "ab.>", topic: "a.b", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, pubsub.ValidatePattern(tt.pattern))
			require.NoError(t, pubsub.ValidateTopic(tt.topic))
			assert.Equal(t, tt.want, pubsub.Match(tt.pattern, tt.topic), "Match(%q, %q)", tt.pattern, tt.topic)
			assert.Equal(t, tt.want, refMatch(tt.pattern, tt.topic), "refMatch(%q, %q)", tt.pattern, tt.topic)
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	var matched bool
	allocs := testing.AllocsPerRun(100, func() {
		matched = pubsub.Match("orders.*.>", "orders.eu.42.created")
	})
	assert.True(t, matched)
	assert.Zero(t, allocs)
}

// longSubject returns a valid topic of exactly n bytes.
func longSubject(n int) string {
	b := []byte(strings.Repeat("abcdefg.", n/8+1)[:n])
	b[n-1] = 'z' // never end with a dot
	return string(b)
}

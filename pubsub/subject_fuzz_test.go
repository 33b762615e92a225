package pubsub_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/pubsub"
)

// FuzzMatch checks the subject functions against the obvious
// strings.Split-based implementations below. Most random strings are invalid
// subjects, so each input is also projected onto the alphabet "ab.*>", which
// turns most inputs into valid, wildcard-rich subjects.
//
// Seeds live in testdata/fuzz/FuzzMatch as well as in f.Add below.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"a.b.c", "a.b.c"},
		{"a.*", "a.b"},
		{"a.*", "a"},
		{"a.>", "a"},
		{"a.>", "a.b.c"},
		{">", "a"},
		{"*.b.>", "a.b"},
		{"*.>", "a"},
		{"a.*.c", "a.b.c.d"},
		{"ab.>", "a.b"},
		{"a.>.c", "a.b.c"},
		{"a..b", "a.b"},
		{"a.", "a."},
		{"\xff", "a\u0085"},
		{"", ""},
	} {
		f.Add(seed[0], seed[1])
	}

	f.Fuzz(func(t *testing.T, pattern, topic string) {
		checkSubjectFuncs(t, pattern, topic)
		checkSubjectFuncs(t, project(pattern), project(topic))
	})
}

func checkSubjectFuncs(t *testing.T, pattern, topic string) {
	for _, s := range []string{pattern, topic} {
		topicErr, patternErr := pubsub.ValidateTopic(s), pubsub.ValidatePattern(s)
		checkSubjectErr(t, s, topicErr)
		checkSubjectErr(t, s, patternErr)
		if got, want := topicErr == nil, refValid(s, false); got != want {
			t.Fatalf("ValidateTopic(%q) = %v, want valid=%v", s, topicErr, want)
		}
		if got, want := patternErr == nil, refValid(s, true); got != want {
			t.Fatalf("ValidatePattern(%q) = %v, want valid=%v", s, patternErr, want)
		}
		if patternErr == nil {
			if got, want := pubsub.IsWildcard(s), refIsWildcard(s); got != want {
				t.Fatalf("IsWildcard(%q) = %v, want %v", s, got, want)
			}
		}
	}
	if pubsub.ValidatePattern(pattern) != nil || pubsub.ValidateTopic(topic) != nil {
		return
	}
	if got, want := pubsub.Match(pattern, topic), refMatch(pattern, topic); got != want {
		t.Fatalf("Match(%q, %q) = %v, want %v", pattern, topic, got, want)
	}
	if !pubsub.Match(topic, topic) {
		t.Fatalf("Match(%q, %q) = false, want a topic to match itself", topic, topic)
	}
	if !pubsub.Match(">", topic) {
		t.Fatalf("Match(\">\", %q) = false, want true", topic)
	}
}

func checkSubjectErr(t *testing.T, s string, err error) {
	if err == nil {
		return
	}
	var se *pubsub.SubjectError
	if !errors.Is(err, pubsub.ErrInvalidSubject) || !errors.As(err, &se) || se.Subject != s {
		t.Fatalf("validating %q: got error %#v, want a *pubsub.SubjectError for it", s, err)
	}
}

// project maps every byte of s onto "ab.*>".
func project(s string) string {
	const alphabet = "ab.*>"
	b := []byte(s)
	for i, c := range b {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(b)
}

// refValid is ValidateTopic (wild == false) or ValidatePattern (wild == true)
// written the obvious way.
func refValid(s string, wild bool) bool {
	if s == "" || len(s) > pubsub.MaxSubjectLen || !utf8.ValidString(s) {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		switch {
		case tok == "":
			return false
		case tok == "*":
			if !wild {
				return false
			}
		case tok == ">":
			if !wild || i != len(tokens)-1 {
				return false
			}
		case strings.ContainsAny(tok, "*>"):
			return false
		case strings.ContainsFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			return false
		}
	}
	return true
}

// refIsWildcard is IsWildcard for a valid pattern, written the obvious way.
func refIsWildcard(pattern string) bool {
	for tok := range strings.SplitSeq(pattern, ".") {
		if tok == "*" || tok == ">" {
			return true
		}
	}
	return false
}

// refMatch is Match written the obvious way.
func refMatch(pattern, topic string) bool {
	p, tt := strings.Split(pattern, "."), strings.Split(topic, ".")
	for i, tok := range p {
		if tok == ">" && i == len(p)-1 {
			return len(tt) > i
		}
		if i >= len(tt) || (tok != "*" && tok != tt[i]) {
			return false
		}
	}
	return len(p) == len(tt)
}

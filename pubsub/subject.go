package pubsub

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxSubjectLen bounds the length in bytes of a topic or pattern.
const MaxSubjectLen = 1024

// SubjectError describes an invalid topic or pattern. errors.Is(err,
// ErrInvalidSubject) reports true for it.
type SubjectError struct {
	Subject string
	Reason  string
}

func (e *SubjectError) Error() string {
	return fmt.Sprintf("pubsub: invalid subject %q: %s", e.Subject, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidSubject) true.
func (e *SubjectError) Is(target error) bool { return target == ErrInvalidSubject }

// ValidateTopic checks a subject to publish to: dot-separated tokens, none
// empty, no whitespace or control characters, no wildcards, valid UTF-8, at
// most MaxSubjectLen bytes.
func ValidateTopic(topic string) error { return validate(topic, false) }

// ValidatePattern checks a subject pattern to subscribe to: a topic whose
// tokens may also be "*" (exactly one token) or, as the last token only, ">"
// (one or more tokens).
func ValidatePattern(pattern string) error { return validate(pattern, true) }

func validate(s string, wild bool) error {
	bad := func(reason string) error { return &SubjectError{Subject: s, Reason: reason} }
	switch {
	case s == "":
		return bad("empty")
	case len(s) > MaxSubjectLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxSubjectLen))
	case !utf8.ValidString(s):
		return bad("not valid UTF-8")
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if c <= ' ' || c == 0x7f {
				return bad("whitespace or control character")
			}
			if c >= utf8.RuneSelf {
				// Unicode whitespace and C1 controls (U+0085, U+00A0,
				// U+2028, ...) are as invisible as their ASCII kin.
				r, size := utf8.DecodeRuneInString(s[i:])
				if unicode.IsSpace(r) || unicode.IsControl(r) {
					return bad("whitespace or control character")
				}
				i += size - 1
			}
			continue
		}
		tok := s[start:i]
		switch {
		case tok == "":
			return bad("empty token")
		case tok == "*" || tok == ">":
			if !wild {
				return bad("wildcard in a topic")
			}
			if tok == ">" && i != len(s) {
				return bad(`">" must be the last token`)
			}
		default:
			for j := 0; j < len(tok); j++ {
				if tok[j] == '*' || tok[j] == '>' {
					return bad("wildcard character inside a token")
				}
			}
		}
		start = i + 1
	}
	return nil
}

// IsWildcard reports whether a valid pattern contains a wildcard token.
func IsWildcard(pattern string) bool {
	for i := 0; i < len(pattern); i++ {
		if (pattern[i] == '*' || pattern[i] == '>') &&
			(i == 0 || pattern[i-1] == '.') &&
			(i == len(pattern)-1 || pattern[i+1] == '.') {
			return true
		}
	}
	return false
}

// Match reports whether topic matches pattern under NATS rules: "*" matches
// exactly one token, a final ">" matches one or more tokens, any other token
// matches itself. Both arguments are assumed valid; Match does not allocate.
func Match(pattern, topic string) bool {
	p, t := 0, 0
	for {
		// Take the next token of each.
		pe := p
		for pe < len(pattern) && pattern[pe] != '.' {
			pe++
		}
		te := t
		for te < len(topic) && topic[te] != '.' {
			te++
		}
		ptok, ttok := pattern[p:pe], topic[t:te]
		switch {
		case ptok == ">" && pe == len(pattern):
			return t < len(topic) || ttok != "" // at least one token left
		case ptok != "*" && ptok != ttok:
			return false
		case t >= len(topic) && ttok == "":
			return false // topic ran out before the pattern
		}
		pDone, tDone := pe >= len(pattern), te >= len(topic)
		if pDone || tDone {
			return pDone && tDone
		}
		p, t = pe+1, te+1
	}
}

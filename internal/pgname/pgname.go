// Package pgname holds the naming rules the PostgreSQL backends share: what
// a namespace (a schema name) may be, and the advisory-lock key of a name.
package pgname

import (
	"hash/fnv"
	"regexp"
)

var namespaceRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// ValidNamespace reports whether ns can name a namespace: [a-z_][a-z0-9_]*,
// at most 48 bytes, so that the schema and the names derived from it stay
// within PostgreSQL's 63-byte identifiers without quoting surprises.
func ValidNamespace(ns string) bool { return namespaceRE.MatchString(ns) }

// LockKey is a stable advisory-lock key for name. A collision with another
// name's key only serializes more than needed; it is never wrong.
func LockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}

// Package enginetest finds the real engines (PostgreSQL, Redis, NATS) that
// integration tests run against, with one rule for every package: the URL
// comes from SWITCHBOARD_POSTGRES_URL, SWITCHBOARD_REDIS_URL or
// SWITCHBOARD_NATS_URL; unset, the test skips with a message that says how
// to run it; under CI=true, an unset or unreachable engine fails the test
// instead, so CI can never go green by skipping.
package enginetest

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"
)

// Engines and the variables that locate them.
const (
	PostgresEnv = "SWITCHBOARD_POSTGRES_URL"
	RedisEnv    = "SWITCHBOARD_REDIS_URL"
	NATSEnv     = "SWITCHBOARD_NATS_URL"
)

// Examples of the variables for this project's machines, used in the skip
// message.
var examples = map[string]string{
	PostgresEnv: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
	RedisEnv:    "redis://127.0.0.1:6379/0",
	NATSEnv:     "nats://127.0.0.1:4222",
}

// PostgresURL returns the PostgreSQL URL for t, or skips (fails under CI).
func PostgresURL(t testing.TB) string { return lookup(t, PostgresEnv) }

// RedisURL returns the Redis URL for t, or skips (fails under CI).
func RedisURL(t testing.TB) string { return lookup(t, RedisEnv) }

// NATSURL returns the NATS URL for t, or skips (fails under CI).
func NATSURL(t testing.TB) string { return lookup(t, NATSEnv) }

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

func lookup(t testing.TB, env string) string {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		if InCI() {
			t.Fatalf("%s is not set: under CI=true every engine test must run (.ci/run sets it)", env)
		}
		t.Skipf("%s is not set; run with %s=%s (see .ci/run) to test against the real engine", env, env, examples[env])
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Fatalf("%s=%q is not a URL with a host: %v", env, raw, err)
	}
	host := u.Host
	if u.Port() == "" {
		switch env {
		case PostgresEnv:
			host = net.JoinHostPort(u.Hostname(), "5432")
		case RedisEnv:
			host = net.JoinHostPort(u.Hostname(), "6379")
		case NATSEnv:
			host = net.JoinHostPort(u.Hostname(), "4222")
		}
	}
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		if InCI() {
			t.Fatalf("%s=%s is unreachable: %v", env, raw, err)
		}
		t.Skipf("%s=%s is unreachable (%v); start the engine (see .ci/run) to run this test", env, raw, err)
	}
	conn.Close()
	return raw
}

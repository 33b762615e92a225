package enginetest

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTB records how lookup ended a test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true; panic(f) }
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true; panic(f) }
func run(f *fakeTB, fn func(testing.TB) string) (url string) {
	defer func() {
		if r := recover(); r != nil && r != f {
			panic(r)
		}
	}()
	return fn(f)
}

func TestLookup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := "redis://" + ln.Addr().String()
	ln.Close() // now a port nobody listens on
	down := up
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	up = "redis://" + ln2.Addr().String()

	tests := []struct {
		name     string
		ci       string
		value    string
		wantURL  string
		wantSkip bool
		wantFail bool
	}{
		{name: "unset skips on a laptop", value: "", wantSkip: true},
		{name: "unset fails under CI", ci: "true", value: "", wantFail: true},
		{name: "unreachable skips on a laptop", value: down, wantSkip: true},
		{name: "unreachable fails under CI", ci: "true", value: down, wantFail: true},
		{name: "reachable returns the URL", ci: "true", value: up, wantURL: up},
		{name: "not a URL fails", value: "::", wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			t.Setenv(RedisEnv, tt.value)
			f := &fakeTB{}
			got := run(f, RedisURL)
			assert.Equal(t, tt.wantSkip, f.skipped, "skipped")
			assert.Equal(t, tt.wantFail, f.failed, "failed")
			assert.Equal(t, tt.wantURL, got)
		})
	}
}

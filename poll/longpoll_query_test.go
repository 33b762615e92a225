package poll

import (
	"net/url"
	"strings"
	"testing"
)

// parseQuery must read the long-poll parameters exactly as
// url.ParseQuery followed by Values.Get would.
func TestParseQueryAgreesWithURLParseQuery(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"empty", ""},
		{"every parameter", "cursor=ab12.7&wait=30s&max=5&from=oldest"},
		{"other parameters ignored", "x=1&cursor=c.1&y=2"},
		{"first value wins", "cursor=a.1&cursor=b.2&wait=1&wait=2"},
		{"escaped value", "cursor=ab%2E3&wait=1%30s"},
		{"plus is a space", "from=old+est"},
		{"escaped name", "curs%6Fr=c.1"},
		{"bad escape skips the pair", "cursor=%zz&cursor=c.2"},
		{"semicolon skips the pair", "cursor=a;b&wait=5s"},
		{"name without value", "cursor&wait="},
		{"empty pairs", "&&cursor=c.1&&"},
		{"equals in the value", "cursor=a=b"},
		{"too many pairs reads nothing", "cursor=c.1" + strings.Repeat("&x=1", 10_000)},
		{"just below the bound", "cursor=c.1" + strings.Repeat("&x=1", 9_999)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := url.ParseQuery(tt.raw)
			want := query{cursor: v.Get("cursor"), wait: v.Get("wait"), max: v.Get("max"), from: v.Get("from")}
			if got := parseQuery(tt.raw); got != want {
				t.Errorf("parseQuery(%q) = %+v, want %+v", tt.raw, got, want)
			}
		})
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"cursor=a.1&wait=30s", "cursor=%41&cursor=b", "from=oldest;x", "max=1&max=%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, _ := url.ParseQuery(raw)
		want := query{cursor: v.Get("cursor"), wait: v.Get("wait"), max: v.Get("max"), from: v.Get("from")}
		if got := parseQuery(raw); got != want {
			t.Errorf("parseQuery(%q) = %+v, want %+v", raw, got, want)
		}
	})
}

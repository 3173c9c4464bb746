package match

import (
	"strings"
	"testing"
	"time"
)

func TestParseLatencyTable(t *testing.T) {
	tab, err := ParseLatencyTable([]byte("# operator's estimates\ndefault 200ms\neu us 90ms\nEU-West asia 180ms # long way\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		a, b string
		want time.Duration
	}{
		{"eu", "us", 90 * time.Millisecond},
		{"us-east-1", "eu-central", 90 * time.Millisecond}, // falls back to parents, either order
		{"eu-west", "asia", 180 * time.Millisecond},
		{"eu", "eu-west-2", 0},
		{"sa", "af", 200 * time.Millisecond},
	} {
		if got := tab.Lookup(tc.a, tc.b); got != tc.want {
			t.Errorf("Lookup(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	for _, bad := range []string{"eu us", "eu us fast", "default soon", "a b c d"} {
		if _, err := ParseLatencyTable([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseLatencyTable(%q) err = %v, want one naming line 1", bad, err)
		}
	}
}

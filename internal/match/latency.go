package match

import (
	"fmt"
	"strings"
	"time"
)

// ParseLatencyTable reads the operator's latency table: one pair a line,
// "REGION REGION LATENCY" (eu us-east 90ms), a "default LATENCY" line for
// pairs not listed, blank lines and # comments. Errors name the line.
func ParseLatencyTable(text []byte) (LatencyTable, error) {
	t := DefaultRanking().Latency
	t.Pairs = map[[2]string]time.Duration{}
	for n, line := range strings.Split(string(text), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		bad := func(why string) (LatencyTable, error) {
			return LatencyTable{}, fmt.Errorf("latency table line %d %q: %s; write REGION REGION LATENCY (eu us 90ms) or default LATENCY", n+1, strings.TrimSpace(line), why)
		}
		switch {
		case len(f) == 0:
			continue
		case len(f) == 2 && f[0] == "default":
			d, err := time.ParseDuration(f[1])
			if err != nil || d < 0 {
				return bad("the latency is not a duration like 150ms")
			}
			t.Default = d
		case len(f) == 3:
			d, err := time.ParseDuration(f[2])
			if err != nil || d < 0 {
				return bad("the latency is not a duration like 90ms")
			}
			t.Pairs[[2]string{normText(f[0]), normText(f[1])}] = d
		default:
			return bad("expected three fields")
		}
	}
	return t, nil
}

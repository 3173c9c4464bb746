package cli

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The load tool end to end against a coordinator on the real clock with a
// 2 s lost deadline: agents register and heartbeat, all reconnect, 10% are
// killed, and the tool sees exactly those go offline, none other.
func TestLoadtestDetectsKilledAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 10 s")
	}
	s := startSystem(t, t.TempDir()+"/gm.db", func(c *coordinatorConfig) {
		c.Clock, c.Tick, c.LostAfter, c.HeartbeatFlush = nil, 200*time.Millisecond, 2*time.Second, 100*time.Millisecond
	})
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"--config", t.TempDir() + "/c.json", "--coordinator", s.co.URL, "loadtest",
		"--agents", "20", "--duration", "2s", "--heartbeat", "500ms", "--storm", "500ms", "--kill", "10", "--detect", "20s"},
		strings.NewReader(""), &out, &errOut, nil)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"registered 20 machines", "reconnect storm: 20 registrations", "killed 2 agents", "2 of 2 offline, 0 false positives", "detection (last heartbeat to offline)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

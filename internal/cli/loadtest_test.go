package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
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

// With --work, every machine runs instances first, and its heartbeats
// report them: none is rejected, none goes offline. Without an admin to
// fund the renters, --work is refused before anything starts.
func TestLoadtestHeartbeatsReportWork(t *testing.T) {
	s := startSystem(t, t.TempDir()+"/gm.db", func(c *coordinatorConfig) {
		c.Clock, c.Tick, c.LostAfter, c.HeartbeatFlush = nil, 200*time.Millisecond, 2*time.Second, 100*time.Millisecond
	})
	args := []string{"--config", t.TempDir() + "/c.json", "--coordinator", s.co.URL, "loadtest",
		"--agents", "6", "--work", "2", "--duration", "1s", "--heartbeat", "200ms"}
	var out, errOut strings.Builder
	t.Setenv("GPUMARKET_ADMIN_EMAIL", "")
	if code := run(context.Background(), args, strings.NewReader(""), &out, &errOut, nil); code != 2 || !strings.Contains(errOut.String(), "GPUMARKET_ADMIN_EMAIL") {
		t.Fatalf("without an admin: exit %d, stderr %q; want 2 and a message naming GPUMARKET_ADMIN_EMAIL", code, errOut.String())
	}
	t.Setenv("GPUMARKET_ADMIN_EMAIL", "admin@example.com")
	t.Setenv("GPUMARKET_ADMIN_PASSWORD", "admin-password")
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), args, strings.NewReader(""), &out, &errOut, nil); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "gave 6 machines their work") {
		t.Errorf("output lacks the work phase:\n%s", out.String())
	}
	beats := false
	for line := range strings.Lines(out.String()) {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "heartbeat" {
			beats = true
			if f[2] != "0" {
				t.Errorf("heartbeats with errors (instance reports rejected?): %s", line)
			}
		}
	}
	if !beats {
		t.Errorf("no heartbeat line:\n%s", out.String())
	}
	n := 0
	all, err := s.co.Service.Instances(t.Context(), market.Account{Roles: []market.Role{market.RoleAdmin}}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range all {
		if inst.State == market.InstanceRunning {
			n++
		}
	}
	if n != 12 {
		t.Errorf("%d instances running, want 12 (2 on each of 6 machines)", n)
	}
}

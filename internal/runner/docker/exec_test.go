package docker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestExec runs health check commands in a running container: exit codes
// as they are, an error at the deadline, and not found for an instance
// without a running container.
func TestExec(t *testing.T) {
	r := newRunner(t, Options{})
	a := assignment("i-exec", "-sleep", "60s")
	if err := r.Start(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background(), a.Instance, 0) })
	for _, tc := range []struct {
		name string
		cmd  []string
		want int
	}{
		{"healthy", []string{"/testprog"}, 0},
		{"exit code", []string{"/testprog", "-exit", "3"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Exec(t.Context(), a, tc.cmd)
			if err != nil || got != tc.want {
				t.Errorf("Exec(%q) = %d, %v; want %d, nil", tc.cmd, got, err, tc.want)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if _, err := r.Exec(ctx, a, []string{"/testprog", "-sleep", "30s"}); err == nil {
			t.Error("Exec past its deadline: no error, want one")
		}
		// The command was killed: no exec of the container runs on once
		// the daemon has seen it end (the sleep would last 30 s).
		r.mu.Lock()
		cid := r.insts[a.Instance].container
		r.mu.Unlock()
		running := func() string {
			res, err := r.cli.ContainerInspect(t.Context(), cid, client.ContainerInspectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range res.Container.ExecIDs {
				if ex, err := r.cli.ExecInspect(t.Context(), id, client.ExecInspectOptions{}); err == nil && ex.Running {
					return fmt.Sprintf("exec %.12s (pid %d)", id, ex.PID)
				}
			}
			return ""
		}
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			ex := running()
			if ex == "" {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("%s still runs 10 s after its deadline", ex)
			}
		}
	})
	t.Run("no program", func(t *testing.T) {
		if code, err := r.Exec(t.Context(), a, []string{"/no/such/program"}); err == nil && code == 0 {
			t.Error("Exec of a missing program: exit 0, want a failure")
		}
	})
	t.Run("not running", func(t *testing.T) {
		_, err := r.Exec(t.Context(), assignment("i-none"), []string{"/testprog"})
		if !market.IsKind(err, market.NotFound) {
			t.Errorf("Exec in an unknown instance: %v, want not found", err)
		}
	})
}

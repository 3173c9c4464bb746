package process

import (
	"context"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestExec runs health check commands for a running instance: with its
// environment and working directory, exit codes as they are, killed at
// the deadline, refused for an instance that does not run.
func TestExec(t *testing.T) {
	r, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := assignment("i-exec", "touch ready; exec sleep 30")
	if err := r.Start(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background(), a.Instance, 0) })
	for _, tc := range []struct {
		name   string
		script string
		want   int
	}{
		{"env and directory", `test "$FOO" = bar && test "$GPUMARKET_INSTANCE" = i-exec && test -e ready`, 0},
		{"exit code", "exit 3", 3},
		{"signal", "kill -9 $$", 128 + 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got int
			var err error
			deadline := time.Now().Add(5 * time.Second)
			for { // "ready" appears once the instance's shell ran
				got, err = r.Exec(t.Context(), a, []string{"/bin/sh", "-c", tc.script})
				if err != nil || got == tc.want || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil || got != tc.want {
				t.Errorf("Exec(%q) = %d, %v; want %d, nil", tc.script, got, err, tc.want)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := r.Exec(ctx, a, []string{"/bin/sh", "-c", "sleep 30 & sleep 30"})
		if err == nil {
			t.Fatal("Exec past its deadline: no error, want one")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Exec past its deadline took %s; want it killed at the deadline", d)
		}
	})
	t.Run("not running", func(t *testing.T) {
		_, err := r.Exec(t.Context(), assignment("i-none", "true"), []string{"true"})
		if !market.IsKind(err, market.NotFound) {
			t.Errorf("Exec in an unknown instance: %v, want not found", err)
		}
	})
}

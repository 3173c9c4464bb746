package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/process"
)

// countingSampler reads two GPUs, or fails every other time when flaky.
type countingSampler struct {
	n     atomic.Int64
	flaky bool
}

func (s *countingSampler) Sample(context.Context) ([]market.GPUSample, error) {
	n := s.n.Add(1)
	if s.flaky && n%2 == 1 {
		return nil, errors.New("nvidia-smi timed out")
	}
	return []market.GPUSample{{Index: 0, UtilPct: float64(n)}, {Index: 1, UtilPct: 50}}, nil
}

// TestReportsCarryGPUSamples: every report the agent sends carries a fresh
// reading of each GPU; a failed reading leaves the report without
// readings but still sends it (it is the heartbeat).
func TestReportsCarryGPUSamples(t *testing.T) {
	for _, flaky := range []bool{false, true} {
		coord := newFakeCoord()
		pr, err := process.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := &countingSampler{flaky: flaky}
		a := agent.New(agent.Config{
			Hardware: market.Hardware{Fingerprint: "fp", Runner: "process"}, Coordinator: coord, Runner: pr,
			Logger: slog.New(slog.DiscardHandler), Sampler: s, Clock: &testClock{},
			HeartbeatInterval: 20 * time.Millisecond, PollWait: 100 * time.Millisecond, ReconcileInterval: 10 * time.Millisecond,
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		r := coord.waitReport(t, "a report with GPU readings", func(r market.Report) bool { return len(r.GPUs) == 2 })
		if r.GPUs[1].UtilPct != 50 {
			t.Errorf("readings %+v", r.GPUs)
		}
		if flaky {
			coord.waitReport(t, "a report without readings after a failed read", func(r market.Report) bool { return len(r.GPUs) == 0 })
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

package coord_test

import (
	"testing"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// BenchmarkHeartbeat measures one agent report of a machine online here,
// running 4 instances: "bare", no instance reports; "repeat", the 4
// running, as recorded before (memory only, like a bare one); "changed",
// the 4 running with a port published anew each time (through the store,
// one write per instance).
//
//	go test -run XXX -bench Heartbeat ./internal/coord/
//
// The Postgres case runs when GPUMARKET_TEST_POSTGRES is set.
func BenchmarkHeartbeat(b *testing.B) {
	onStores(b, func(b *testing.B, store coord.Store) { benchHeartbeat(b, newEnvOn(b, store, nil)) })
}

func benchHeartbeat(b *testing.B, e *env) {
	var reps []market.InstanceReport
	for range 4 {
		inst := must(e.create(1))
		reps = append(reps, market.InstanceReport{Instance: inst.ID, Generation: inst.Generation, State: market.ObservedRunning})
	}
	report := func(b *testing.B, r market.Report) {
		if res, err := e.svc.Report(e.ctx, e.host, e.mach.ID, r); err != nil || len(res.Rejected) > 0 {
			b.Fatalf("report: %v, rejected %v", err, res.Rejected)
		}
	}
	report(b, market.Report{Instances: reps}) // the acknowledgements
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			report(b, market.Report{})
		}
	})
	b.Run("repeat", func(b *testing.B) {
		for b.Loop() {
			report(b, market.Report{Instances: reps})
		}
	})
	b.Run("changed", func(b *testing.B) {
		port := 40000
		for b.Loop() {
			port++
			changed := make([]market.InstanceReport, len(reps))
			for k, r := range reps {
				r.Ports = []market.PortBinding{{Port: "8888/tcp", HostPort: port}}
				changed[k] = r
			}
			report(b, market.Report{Instances: changed})
		}
	})
}

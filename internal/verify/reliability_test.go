package verify_test

import (
	"math"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/verify"
)

func TestReliability(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	h := func(hours float64) time.Time { return t0.Add(time.Duration(hours * float64(time.Hour))) }
	ev := func(at float64, k verify.HistoryKind) verify.HistoryEvent {
		return verify.HistoryEvent{At: h(at), Kind: k}
	}
	end := func(at float64, f verify.Fault) verify.HistoryEvent {
		return verify.HistoryEvent{At: h(at), Kind: verify.Ended, Fault: f}
	}
	const day = 24.0
	tests := []struct {
		name                                string
		created                             float64
		history                             []verify.HistoryEvent
		now                                 float64
		score, coverage, factor             float64
		listed, online                      int64 // seconds
		hostFaults, renterFaults, completed int
	}{
		{name: "never listed", now: 10, score: 1, coverage: 1, factor: 1},
		{name: "listed, always online", history: []verify.HistoryEvent{ev(1, verify.Listed)}, now: 11,
			score: 1, coverage: 1, factor: 1, listed: 36000, online: 36000},
		{name: "offline one hour of four", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(1, verify.Offline), ev(2, verify.Online)}, now: 4,
			score: 0.75, coverage: 0.75, factor: 1, listed: 4 * 3600, online: 3 * 3600},
		{name: "offline while unlisted does not count", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(1, verify.Unlisted), ev(1, verify.Offline), ev(3, verify.Online), ev(3, verify.Listed)}, now: 4,
			score: 1, coverage: 1, factor: 1, listed: 2 * 3600, online: 2 * 3600},
		{name: "still offline at the end", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(2, verify.Offline)}, now: 4,
			score: 0.5, coverage: 0.5, factor: 1, listed: 4 * 3600, online: 2 * 3600},
		{name: "renter faults never count", history: []verify.HistoryEvent{ev(0, verify.Listed), end(1, verify.RenterFault), end(2, verify.RenterFault), end(3, verify.NoFault)}, now: 4,
			score: 1, coverage: 1, factor: 1, listed: 4 * 3600, online: 4 * 3600, renterFaults: 2, completed: 1},
		{name: "one host fault in four", history: []verify.HistoryEvent{ev(0, verify.Listed), end(1, verify.HostFault), end(1, verify.NoFault), end(2, verify.NoFault), end(3, verify.NoFault), end(3, verify.RenterFault)}, now: 4,
			score: 0.75, coverage: 1, factor: 0.75, listed: 4 * 3600, online: 4 * 3600, hostFaults: 1, completed: 3, renterFaults: 1},
		{name: "both terms multiply", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(3, verify.Offline), end(3, verify.HostFault), end(2, verify.NoFault)}, now: 4,
			score: 0.375, coverage: 0.75, factor: 0.5, listed: 4 * 3600, online: 3 * 3600, hostFaults: 1, completed: 1},
		{name: "outage older than 30 days is forgotten", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(1, verify.Offline), ev(2, verify.Online), end(1, verify.HostFault)}, now: 40 * day,
			score: 1, coverage: 1, factor: 1, listed: 30 * 24 * 3600, online: 30 * 24 * 3600},
		{name: "state at window start carries over", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(1, verify.Offline), ev(10*day+12, verify.Online)}, now: 40 * day,
			score: (30*24 - 12.0) / (30 * 24), coverage: (30*24 - 12.0) / (30 * 24), factor: 1, listed: 30 * 24 * 3600, online: (30*24 - 12) * 3600},
		{name: "events after now are ignored", history: []verify.HistoryEvent{ev(0, verify.Listed), ev(5, verify.Offline), end(5, verify.HostFault)}, now: 4,
			score: 1, coverage: 1, factor: 1, listed: 4 * 3600, online: 4 * 3600},
		{name: "unsorted history", history: []verify.HistoryEvent{ev(2, verify.Online), ev(0, verify.Listed), ev(1, verify.Offline)}, now: 4,
			score: 0.75, coverage: 0.75, factor: 1, listed: 4 * 3600, online: 3 * 3600},
		{name: "created late: window starts at creation", created: 35 * day, history: []verify.HistoryEvent{ev(35*day, verify.Listed), ev(39*day, verify.Offline)}, now: 40 * day,
			score: 0.8, coverage: 0.8, factor: 1, listed: 5 * 24 * 3600, online: 4 * 24 * 3600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := verify.Reliability(h(tc.created), tc.history, h(tc.now), verify.Window)
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
			if !near(r.Score, tc.score) || !near(r.Coverage, tc.coverage) || !near(r.FaultFactor, tc.factor) {
				t.Errorf("score %v coverage %v factor %v, want %v %v %v", r.Score, r.Coverage, r.FaultFactor, tc.score, tc.coverage, tc.factor)
			}
			if r.ListedSecs != tc.listed || r.OnlineSecs != tc.online {
				t.Errorf("listed %d online %d, want %d %d", r.ListedSecs, r.OnlineSecs, tc.listed, tc.online)
			}
			if r.HostFaults != tc.hostFaults || r.RenterFaults != tc.renterFaults || r.Completed != tc.completed {
				t.Errorf("host %d renter %d completed %d, want %d %d %d", r.HostFaults, r.RenterFaults, r.Completed, tc.hostFaults, tc.renterFaults, tc.completed)
			}
		})
	}
}

func TestClassifyEnd(t *testing.T) {
	tests := []struct {
		typ, msg string
		want     verify.Fault
	}{
		{"instance.failed", "failed: host lost contact", verify.HostFault},
		{"instance.failed", "failed: failed: GPU 1 fell off the bus (Xid 79)", verify.HostFault},
		{"instance.failed", "failed: failed: nvml: driver/library version mismatch", verify.HostFault},
		{"instance.failed", "failed: failed: pull image nosuch:latest: not found", verify.RenterFault},
		{"instance.failed", "failed: failed: exec format error", verify.RenterFault},
		{"instance.failed", "failed: failed: CUDA out of memory", verify.RenterFault},
		{"instance.failed", "failed: failed: container killed: OOM", verify.RenterFault},
		{"instance.failed", "failed: the agent could not start it", verify.RenterFault},
		{"instance.stopped", "stopped: exited with code 1", verify.RenterFault},
		{"instance.stopped", "stopped: exited with code 137", verify.RenterFault},
		{"instance.stopped", "stopped: exited with code 0", verify.NoFault},
		{"instance.stopped", "stopped: stopped", verify.NoFault},
		{"instance.preempted", "preempted: outbid", verify.NoFault},
	}
	for _, tc := range tests {
		if got := verify.ClassifyEnd(tc.typ, tc.msg); got != tc.want {
			t.Errorf("ClassifyEnd(%q, %q) = %d, want %d", tc.typ, tc.msg, got, tc.want)
		}
	}
}

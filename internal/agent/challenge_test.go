package agent_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/process"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// challengeCoord is a coordinator whose desired state carries one
// challenge until it is answered, and which checks the answer as the real
// one does.
type challengeCoord struct {
	mu       sync.Mutex
	ch       market.Challenge
	answered bool
	commits  int
	roots    map[string]string
	samples  map[string][]int
	verdict  chan error
}

func (c *challengeCoord) Register(ctx context.Context, hw market.Hardware) (market.Machine, error) {
	return market.Machine{ID: "m-test", Hardware: hw}, nil
}

func (c *challengeCoord) Desired(ctx context.Context, id market.MachineID, since int64, wait time.Duration) (market.DesiredState, error) {
	c.mu.Lock()
	ds := market.DesiredState{Machine: id, Version: since + 1, Assignments: []market.Assignment{}, LostAfterSeconds: 60}
	if !c.answered {
		ch := c.ch
		ds.Challenge = &ch
	}
	c.mu.Unlock()
	// Answer soon, with a new version, so the agent sees the same
	// challenge several times while it works.
	select {
	case <-time.After(5 * time.Millisecond):
	case <-ctx.Done():
		return market.DesiredState{}, ctx.Err()
	}
	return ds, nil
}

func (c *challengeCoord) Report(ctx context.Context, id market.MachineID, r market.Report) (market.ReportResult, error) {
	return market.ReportResult{}, nil
}

func (c *challengeCoord) CommitChallenge(ctx context.Context, id market.MachineID, check market.CheckID, cm market.ChallengeCommit) (market.ChallengeSamples, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits++
	var out market.ChallengeSamples
	for _, r := range cm.Roots {
		c.roots[r.UUID] = r.Root
		tiles := verify.SampleTiles("secret", r.UUID, r.Root, 16, 4)
		c.samples[r.UUID] = tiles
		out.GPUs = append(out.GPUs, market.GPUSamples{UUID: r.UUID, Tiles: tiles})
	}
	return out, nil
}

func (c *challengeCoord) ProveChallenge(ctx context.Context, id market.MachineID, check market.CheckID, pr market.ChallengeProofs) (market.Check, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answered = true
	var err error
	if len(pr.GPUs) != len(c.ch.GPUs) {
		err = market.Errorf("prove", market.Invalid, "proofs for %d GPUs, want %d", len(pr.GPUs), len(c.ch.GPUs))
	}
	for _, g := range pr.GPUs {
		task := verify.Task{Nonce: c.ch.Nonce, UUID: g.UUID, TileSize: 64, Tiles: 16}
		if e := verify.CheckProofs(task, c.roots[g.UUID], c.samples[g.UUID], g.Proofs); e != nil && err == nil {
			err = e
		}
	}
	c.verdict <- err
	return market.Check{ID: check, State: market.CheckPassed}, nil
}

func TestAgentAnswersChallengesOnce(t *testing.T) {
	cc := &challengeCoord{
		ch: market.Challenge{Check: "v-1", Protocol: verify.Protocol, Nonce: "nonce", Deadline: time.Now().Add(time.Minute), GPUs: []market.ChallengeTask{
			{Index: 0, UUID: "GPU-fake-a", TileSize: 64, Tiles: 16}, {Index: 1, UUID: "GPU-fake-b", TileSize: 64, Tiles: 16}}},
		roots: map[string]string{}, samples: map[string][]int{}, verdict: make(chan error, 10),
	}
	var _ agent.ChallengeAPI = cc
	r, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := agent.New(agent.Config{
		Hardware: market.Hardware{Fingerprint: "fp", Runner: "process"}, Coordinator: cc, Runner: r,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		HeartbeatInterval: 50 * time.Millisecond, PollWait: 100 * time.Millisecond, ReconcileInterval: 10 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	select {
	case err := <-cc.verdict:
		if err != nil {
			t.Fatalf("the agent's answer is wrong: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer")
	}
	time.Sleep(100 * time.Millisecond) // more polls, same challenge until answered
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.commits != 1 {
		t.Errorf("the agent committed %d times to one challenge", cc.commits)
	}
}

// lockedBuffer is a log destination safe for the agent's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A challenge of another protocol is not answered with roots the
// coordinator would reject as wrong parts: the log says to upgrade.
func TestAgentLeavesChallengeOfAnotherProtocol(t *testing.T) {
	cc := &challengeCoord{
		ch: market.Challenge{Check: "v-1", Protocol: verify.Protocol - 1, Nonce: "nonce", Deadline: time.Now().Add(time.Minute), GPUs: []market.ChallengeTask{
			{Index: 0, UUID: "GPU-fake-a", TileSize: 64, Tiles: 16}}},
		roots: map[string]string{}, samples: map[string][]int{}, verdict: make(chan error, 10),
	}
	r, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	a := agent.New(agent.Config{
		Hardware: market.Hardware{Fingerprint: "fp", Runner: "process"}, Coordinator: cc, Runner: r,
		Logger:            slog.New(slog.NewTextHandler(&logs, nil)),
		HeartbeatInterval: 50 * time.Millisecond, PollWait: 100 * time.Millisecond, ReconcileInterval: 10 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "another challenge protocol") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("agent: %v", err)
	}
	if !strings.Contains(logs.String(), "run the same gpumarket version on the agent and the coordinator") {
		t.Errorf("the log does not say what to do:\n%s", logs.String())
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.commits != 0 {
		t.Errorf("the agent committed %d times to a challenge of another protocol", cc.commits)
	}
}

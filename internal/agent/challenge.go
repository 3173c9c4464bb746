package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

// ChallengeAPI is the part of the coordinator's agent API that answers
// verification checks. A Coordinator that also implements it gets its
// challenges answered; one that does not leaves them to time out.
type ChallengeAPI interface {
	CommitChallenge(ctx context.Context, id market.MachineID, check market.CheckID, cm market.ChallengeCommit) (market.ChallengeSamples, error)
	ProveChallenge(ctx context.Context, id market.MachineID, check market.CheckID, pr market.ChallengeProofs) (market.Check, error)
}

// challenger answers the verification challenges found in desired states,
// one at a time, in a goroutine it owns: solving takes real compute time
// and must not hold up reconciling. It works as fast as it can, since the
// coordinator times it; it never waits on purpose.
type challenger struct {
	api    ChallengeAPI // nil: challenges are ignored
	solver verify.Solver
	log    *slog.Logger

	mu     sync.Mutex
	active market.CheckID
	cancel context.CancelFunc
	seen   map[market.CheckID]bool // taken already (answered or being answered)
	wg     sync.WaitGroup
}

func newChallenger(a *Agent) *challenger {
	c := &challenger{solver: a.cfg.Solver, log: a.log, seen: map[market.CheckID]bool{}}
	if api, ok := a.cfg.Coordinator.(ChallengeAPI); ok {
		c.api = api
	}
	if c.solver == nil {
		c.solver = verify.CPUSolver{}
	}
	return c
}

// take starts answering ch unless it is already taken. A new check
// supersedes one in progress, as it does on the coordinator.
func (c *challenger) take(ctx context.Context, machine market.MachineID, ch *market.Challenge) {
	if ch == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[ch.Check] {
		return
	}
	if len(c.seen) > 1000 {
		clear(c.seen) // checks come hours apart; old IDs never return
	}
	if c.api == nil {
		c.seen[ch.Check] = true
		c.log.Warn("verification challenge ignored: this coordinator client cannot answer it", "check", ch.Check)
		return
	}
	if c.cancel != nil {
		c.cancel()
	}
	c.seen[ch.Check] = true
	cctx, cancel := context.WithCancel(ctx)
	c.active, c.cancel = ch.Check, cancel
	c.wg.Go(func() {
		defer cancel()
		c.answer(cctx, machine, *ch)
		c.mu.Lock()
		if c.active == ch.Check {
			c.active, c.cancel = "", nil
		}
		c.mu.Unlock()
	})
}

// wait stops the challenge in progress and waits for its goroutine.
func (c *challenger) wait() {
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// answer solves every GPU's task, all at once (the coordinator times the
// whole challenge, and each GPU has its own solver's device), commits to
// the roots, proves the tiles asked for and logs the verdict.
func (c *challenger) answer(ctx context.Context, machine market.MachineID, ch market.Challenge) {
	if ch.Protocol != verify.Protocol {
		c.log.Error("verification challenge not answered: this agent speaks another challenge protocol; run the same gpumarket version on the agent and the coordinator",
			"check", ch.Check, "coordinator_protocol", ch.Protocol, "agent_protocol", verify.Protocol)
		return
	}
	start := time.Now()
	solved := make([]*verify.Solution, len(ch.GPUs))
	var wg sync.WaitGroup
	for i, t := range ch.GPUs {
		wg.Go(func() {
			sol, err := c.solver.Solve(ctx, verify.TaskOf(ch.Nonce, t))
			if err != nil {
				if ctx.Err() == nil {
					// The others are committed: the coordinator fails this
					// GPU with "no commitment", and the log says why.
					c.log.Error("cannot solve the verification challenge", "check", ch.Check, "gpu", t.Index, "err", err)
				}
				return
			}
			solved[i] = sol
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	sols := map[string]*verify.Solution{}
	var commit market.ChallengeCommit
	for i, t := range ch.GPUs {
		if sol := solved[i]; sol != nil {
			sols[t.UUID] = sol
			commit.Roots = append(commit.Roots, market.GPURoot{UUID: t.UUID, Root: sol.Root()})
		}
	}
	took := time.Since(start)
	samples, err := c.api.CommitChallenge(ctx, machine, ch.Check, commit)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("verification check failed at commitment", "check", ch.Check, "solve_time", took, "err", err)
		}
		return
	}
	var proofs market.ChallengeProofs
	for _, g := range samples.GPUs {
		sol, ok := sols[g.UUID]
		if !ok {
			continue
		}
		gp := market.GPUProofs{UUID: g.UUID}
		for _, tile := range g.Tiles {
			p, err := sol.Prove(tile)
			if err != nil {
				c.log.Error("cannot prove a tile", "check", ch.Check, "tile", tile, "err", err)
				continue
			}
			gp.Proofs = append(gp.Proofs, p)
		}
		proofs.GPUs = append(proofs.GPUs, gp)
	}
	res, err := c.api.ProveChallenge(ctx, machine, ch.Check, proofs)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			c.log.Error("verification check failed", "check", ch.Check, "err", err)
		}
	case res.State == market.CheckPassed:
		c.log.Info("verification check passed", "check", ch.Check, "gpus", len(ch.GPUs), "solve_time", took)
	default:
		c.log.Error("verification check failed", "check", ch.Check, "state", res.State, "failure", res.Failure)
	}
}

package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/gpu/cuda"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/verify"
)

type machineSelfTestCmd struct {
	FakeGPUs string `name:"fake-gpus" placeholder:"SPEC" help:"Test simulated GPUs, as 'agent --fake-gpus' makes them (\"2xRTX 4090\"), instead of this machine's."`
	GPU      []int  `name:"gpu" placeholder:"INDEX" help:"Test only these GPUs (by index; default: all)."`
	CPU      bool   `name:"cpu" help:"Solve on the CPU even when the CUDA solver is available."`
}

func (c *machineSelfTestCmd) Help() string {
	return `Runs the coordinator's compute challenge on this machine's GPUs, locally
and with no coordinator: for each GPU, the task a coordinator would send
(sized from the model table, internal/verify/models.json), solved as the
agent would (through CUDA on a real GPU when the driver loads, else on the
CPU), timed against the model's envelope, and spot-checked against the CPU
reference. It shows whether the GPU would pass a check and how fast it
answered. See docs/verification.md.

Examples:
  gpumarket machine self-test
  gpumarket machine self-test --gpu 0 -o json
  gpumarket machine self-test --fake-gpus "2xRTX 4090"`
}

// selfTestResult is one GPU's self-test.
type selfTestResult struct {
	Index    int     `json:"index"`
	UUID     string  `json:"uuid"`
	Model    string  `json:"model"`
	Solver   string  `json:"solver"` // cuda or cpu
	TileSize int     `json:"tile_size,omitempty"`
	Tiles    int     `json:"tiles,omitempty"`
	Work     int64   `json:"work,omitempty"` // multiply-adds
	Seconds  float64 `json:"seconds,omitempty"`
	Rate     float64 `json:"rate,omitempty"` // multiply-adds per second
	MinRate  float64 `json:"min_rate,omitempty"`
	MaxRate  float64 `json:"max_rate,omitempty"`
	Pass     bool    `json:"pass"`
	Reason   string  `json:"reason,omitempty"`
}

func (c *machineSelfTestCmd) Run(ctx context.Context, env *Env) error {
	found, err := discoverGPUs(ctx, c.FakeGPUs, "self-test", nil)
	if err != nil {
		return err
	}
	if found.nvml != nil {
		defer found.nvml.Close()
	}
	gpus := found.gpus
	for _, i := range c.GPU {
		if !slices.ContainsFunc(gpus, func(g market.GPU) bool { return g.Index == i }) {
			return usagef("--gpu %d: this machine has no GPU %d (it has %d)", i, i, len(gpus))
		}
	}
	if len(c.GPU) > 0 {
		gpus = slices.DeleteFunc(slices.Clone(gpus), func(g market.GPU) bool { return !slices.Contains(c.GPU, g.Index) })
	}
	tab, err := verify.DefaultTable()
	if err != nil {
		return err
	}
	var solver verify.Solver = verify.CPUSolver{}
	onGPU := map[string]bool{}
	if !c.CPU && c.FakeGPUs == "" {
		cs, err := cuda.Open(ctx, solver)
		if err != nil {
			fmt.Fprintf(env.Stderr, "CUDA solver not available, solving on the CPU: %v\n", err)
		} else {
			solver = cs
			v, _ := cuda.DriverVersion()
			fmt.Fprintf(env.Stderr, "CUDA driver %s: solving on GPUs %v\n", v, cs.GPUs())
			for _, u := range cs.GPUs() {
				onGPU[u] = true
			}
			for u, err := range cs.Failed() {
				fmt.Fprintf(env.Stderr, "GPU %s left to the CPU: %v\n", u, err)
			}
		}
	}
	var results []selfTestResult
	for _, g := range gpus {
		r := selfTestResult{Index: g.Index, UUID: g.UUID, Model: g.Model, Solver: "cpu"}
		if onGPU[g.UUID] {
			r.Solver = "cuda"
		}
		if err := selfTestGPU(ctx, env, tab, solver, g, c.FakeGPUs != "", &r); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.Reason = err.Error()
		} else {
			r.Pass = true
		}
		results = append(results, r)
	}
	if env.JSON() {
		return env.printJSON(results)
	}
	t := newTable(env.Stdout, "GPU", "MODEL", "SOLVER", "TASK", "TIME", "MULTIPLY-ADDS/S", "ENVELOPE", "RESULT")
	for _, r := range results {
		task, took, rate, envelope := "-", "-", "-", "-"
		if r.Tiles > 0 {
			task = fmt.Sprintf("%d x %dx%d", r.Tiles, r.TileSize, r.TileSize)
			envelope = fmt.Sprintf("%.3g - %.3g", r.MinRate, r.MaxRate)
		}
		if r.Seconds > 0 {
			took = (time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond).String()
			rate = fmt.Sprintf("%.3g", r.Rate)
		}
		result := "pass"
		if !r.Pass {
			result = "FAIL: " + r.Reason
		}
		t.row(fmt.Sprint(r.Index), r.Model, r.Solver, task, took, rate, envelope, result)
	}
	return t.flush()
}

// selfTestGPU runs one GPU's challenge into r; an error is why it would
// fail.
func selfTestGPU(ctx context.Context, env *Env, tab *verify.Table, solver verify.Solver, g market.GPU, fake bool, r *selfTestResult) error {
	plan, err := tab.Plan(g, fake)
	if err != nil {
		return err
	}
	r.TileSize, r.Tiles, r.Work, r.MinRate, r.MaxRate = plan.TileSize, plan.Tiles, plan.Work, plan.MinRate, plan.MaxRate
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	task := verify.Task{Nonce: hex.EncodeToString(nonce[:]), UUID: g.UUID, TileSize: plan.TileSize, Tiles: plan.Tiles}
	fmt.Fprintf(env.Stderr, "GPU %d (%s): %d tiles of %dx%d (%.3g multiply-adds) on the %s...\n", g.Index, g.Model, task.Tiles, task.TileSize, task.TileSize, float64(task.Work()), r.Solver)
	start := time.Now()
	sol, err := solver.Solve(ctx, task)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	r.Seconds = elapsed.Seconds()
	r.Rate, err = tab.Judge(plan, elapsed)
	if err != nil {
		return err
	}
	// The coordinator's spot check: tiles drawn from a secret after the
	// commitment, recomputed on the CPU.
	tiles := verify.SampleTiles(hex.EncodeToString(nonce[8:]), g.UUID, sol.Root(), task.Tiles, plan.Samples)
	var proofs []market.TileProof
	for _, i := range tiles {
		p, err := sol.Prove(i)
		if err != nil {
			return err
		}
		proofs = append(proofs, p)
	}
	return verify.CheckProofs(task, sol.Root(), tiles, proofs)
}

package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// mach is a listed, online machine with n GPUs of a model.
func mach(id, region, dc string, n int, model string, used ...int) Machine {
	m := market.Machine{ID: market.MachineID(id), Online: true, Listed: true, PricePerGPUHour: market.Tokens(1), UsedGPUs: used}
	m.Region, m.DataCenter, m.Runner = region, dc, "process"
	for i := range n {
		m.GPUs = append(m.GPUs, market.GPU{Index: i, UUID: fmt.Sprintf("%s-%d", id, i), Model: model, VRAMMiB: 24564})
	}
	return Machine{Machine: m}
}

func pooled(m Machine, pool string) Machine { m.Pool = pool; return m }

// depl is a deployment of replicas of gpus GPUs, min..max, desired = min.
func depl(id string, gpus, lo, hi int, mod ...func(*market.Deployment)) market.Deployment {
	d := market.Deployment{ID: market.DeploymentID(id), Owner: "a-renter", Revision: 1, Desired: lo, CreatedAt: t0,
		Spec: market.DeploymentSpec{Name: id, GPUsPerReplica: gpus, MinReplicas: lo, MaxReplicas: hi, Command: []string{"serve"}}}
	for _, f := range mod {
		f(&d)
	}
	return d
}

// rep is a ready replica at revision 1.
func rep(inst, d, machine string, gpus ...int) Replica {
	return Replica{Instance: market.InstanceID(inst), Deployment: market.DeploymentID(d), Machine: market.MachineID(machine),
		GPUs: gpus, State: market.InstanceRunning, Revision: 1, Ready: true, CreatedAt: t0}
}

// withUsed marks the replicas' GPUs used on their machines.
func withUsed(ms []Machine, rs []Replica) []Machine {
	out := slices.Clone(ms)
	for i := range out {
		for _, r := range rs {
			if r.Machine == out[i].ID {
				out[i].UsedGPUs = append(slices.Clone(out[i].UsedGPUs), r.GPUs...)
			}
		}
	}
	return out
}

// summary writes a plan as sorted lines, for readable diffs.
func summary(p Plan) []string {
	var out []string
	for _, pl := range p.Places {
		line := fmt.Sprintf("place %s on %s %v", pl.Deployment, pl.Machine, pl.GPUs)
		if pl.Spot {
			line = fmt.Sprintf("bid %s on %s", pl.Deployment, pl.Machine)
		}
		out = append(out, line)
	}
	for _, s := range p.Stops {
		kind := "stop"
		if s.Preempt {
			kind = "preempt"
		}
		what := string(s.Instance)
		if s.Bid != "" {
			what = strings.TrimSpace(what + " " + string(s.Bid))
		}
		out = append(out, fmt.Sprintf("%s %s of %s", kind, what, s.Deployment))
	}
	for _, s := range p.Scales {
		out = append(out, fmt.Sprintf("scale %s %d->%d", s.Deployment, s.From, s.To))
	}
	slices.Sort(out)
	return out
}

func TestReconcile(t *testing.T) {
	latency := match.LatencyTable{Default: 200 * time.Millisecond, Pairs: map[[2]string]time.Duration{
		{"eu", "us"}: 90 * time.Millisecond, {"eu", "me"}: 40 * time.Millisecond,
	}}
	u := func(v float64) *float64 { return &v }
	q := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name    string
		in      Input
		want    []string
		why     string // substring of the first deployment's pending reason
		pending int
	}{
		{
			name: "places min replicas spread over hosts",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 3, 3)},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-2", "eu", "", 4, "RTX 4090"), mach("m-3", "eu", "", 4, "RTX 4090")},
			},
			want: []string{"place d-1 on m-1 [0]", "place d-1 on m-2 [0]", "place d-1 on m-3 [0]"},
		},
		{
			name: "spreads across data centers before hosts",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2)},
				Machines:    []Machine{mach("m-1", "eu", "fra", 4, "RTX 4090"), mach("m-2", "eu", "fra", 4, "RTX 4090"), mach("m-3", "eu", "ams", 4, "RTX 4090")},
				Replicas:    []Replica{rep("i-1", "d-1", "m-1", 0)},
			},
			want: []string{"place d-1 on m-3 [0]"},
		},
		{
			name: "replaces a replica lost with its host",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 2, 2, 2)},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-3", "eu", "", 2, "RTX 4090")},
				Replicas:    []Replica{rep("i-1", "d-1", "m-1", 0, 1)}, // i-2 ran on m-2, now gone
			},
			want: []string{"place d-1 on m-3 [0 1]"},
		},
		{
			name: "prefers the listed regions in order",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 1, 1, func(d *market.Deployment) { d.Spec.Regions = []string{"us", "eu"} })},
				Machines:    []Machine{mach("m-eu", "eu", "", 4, "RTX 4090"), mach("m-us", "us-east", "", 4, "RTX 4090")},
			},
			want: []string{"place d-1 on m-us [0]"},
		},
		{
			name: "falls back to a region within the latency budget",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 1, 1, func(d *market.Deployment) {
					d.Spec.Regions, d.Spec.MaxLatency = []string{"eu"}, market.Duration(50*time.Millisecond)
				})},
				Machines: []Machine{mach("m-eu", "eu", "", 1, "RTX 4090", 0), mach("m-us", "us", "", 4, "RTX 4090"), mach("m-me", "me", "", 4, "RTX 4090")},
			},
			want: []string{"place d-1 on m-me [0]"},
		},
		{
			name: "never beyond the latency budget",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 2, 1, 1, func(d *market.Deployment) {
					d.Spec.Regions, d.Spec.MaxLatency = []string{"eu"}, market.Duration(50*time.Millisecond)
				})},
				Machines: []Machine{mach("m-eu", "eu", "", 4, "RTX 4090", 0, 1, 2), mach("m-us", "us", "", 4, "RTX 4090")},
			},
			pending: 1,
			why:     "no machine with 2 free GPUs in eu or within 50ms of them; nearest: m-eu (1 of 4 RTX 4090 free, eu) fails num_gpus>=2",
		},
		{
			name: "explains the nearest miss of the query",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 2, 1, 1, func(d *market.Deployment) {
					d.Spec.Query, d.Spec.Regions = "gpu_name=RTX_4090", []string{"eu"}
				})},
				Machines: []Machine{mach("m-a", "eu", "", 4, "A100")},
			},
			pending: 1,
			why:     "no machine with 2 free GPUs matching 'gpu_name=RTX_4090' in eu; nearest: m-a (4 of 4 A100 free, eu) fails gpu_name=RTX_4090",
		},
		{
			name: "scales up on queue length, at most max step",
			in: Input{
				Now: t0.Add(time.Hour),
				Deployments: []market.Deployment{depl("d-1", 1, 1, 10, func(d *market.Deployment) {
					d.Spec.Scale = &market.ScaleRule{Metric: market.ScaleQueue, Target: 100}
				})},
				Machines: []Machine{mach("m-1", "eu", "", 8, "RTX 4090")},
				Replicas: []Replica{func() Replica { r := rep("i-1", "d-1", "m-1", 0); r.Queue = q(450); return r }()},
			},
			want: []string{"place d-1 on m-1 [1]", "place d-1 on m-1 [2]", "scale d-1 1->3"},
		},
		{
			name: "no scale-up within the up cooldown",
			in: Input{
				Now: t0.Add(30 * time.Second),
				Deployments: []market.Deployment{depl("d-1", 1, 1, 10, func(d *market.Deployment) {
					d.Spec.Scale = &market.ScaleRule{Metric: market.ScaleQueue, Target: 100}
					d.LastScaleAt, d.LastScaleUp = &t0, true
				})},
				Machines: []Machine{mach("m-1", "eu", "", 8, "RTX 4090")},
				Replicas: []Replica{func() Replica { r := rep("i-1", "d-1", "m-1", 0); r.Queue = q(450); return r }()},
			},
			want: nil,
		},
		{
			name: "scales down on low GPU utilisation after the down cooldown",
			in: Input{
				Now: t0.Add(6 * time.Minute),
				Deployments: []market.Deployment{depl("d-1", 1, 1, 4, func(d *market.Deployment) {
					d.Spec.Scale = &market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 70}
					d.Desired, d.LastScaleAt, d.LastScaleUp = 4, &t0, true
				})},
				Machines: []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-2", "eu", "", 4, "RTX 4090")},
				Replicas: func() []Replica {
					rs := []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-2", 0), rep("i-3", "d-1", "m-1", 1), rep("i-4", "d-1", "m-2", 1)}
					for i := range rs {
						rs[i].Util = u(10)
						rs[i].CreatedAt = t0.Add(time.Duration(i) * time.Minute)
					}
					return rs
				}(),
			},
			// 40% summed wants 1; at most 2 per step; newest go first
			want: []string{"scale d-1 4->2", "stop i-3 of d-1", "stop i-4 of d-1"},
		},
		{
			name: "no scale-down within the down cooldown",
			in: Input{
				Now: t0.Add(4 * time.Minute),
				Deployments: []market.Deployment{depl("d-1", 1, 1, 4, func(d *market.Deployment) {
					d.Spec.Scale = &market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 70}
					d.Desired, d.LastScaleAt, d.LastScaleUp = 2, &t0, true
				})},
				Machines: []Machine{mach("m-1", "eu", "", 4, "RTX 4090")},
				Replicas: func() []Replica {
					rs := []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-1", 1)}
					rs[0].Util, rs[1].Util = u(5), u(5)
					return rs
				}(),
			},
			want: nil,
		},
		{
			name: "no metrics: no scaling",
			in: Input{
				Now: t0.Add(time.Hour),
				Deployments: []market.Deployment{depl("d-1", 1, 1, 4, func(d *market.Deployment) {
					d.Spec.Scale = &market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 70}
				})},
				Machines: []Machine{mach("m-1", "eu", "", 4, "RTX 4090")},
				Replicas: []Replica{rep("i-1", "d-1", "m-1", 0)},
			},
			want: nil,
		},
		{
			name: "rolling update starts one new replica",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Revision = 2 })},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-2", "eu", "", 4, "RTX 4090")},
				Replicas:    []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-2", 0)},
			},
			want: []string{"place d-1 on m-1 [1]"},
		},
		{
			name: "rolling update waits for the new replica to be ready",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Revision = 2 })},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-2", "eu", "", 4, "RTX 4090")},
				Replicas: []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-2", 0),
					func() Replica {
						r := rep("i-3", "d-1", "m-1", 1)
						r.Revision, r.Ready, r.State = 2, false, market.InstanceStarting
						return r
					}()},
			},
			want: nil,
			why:  "waiting for 1 new replicas to be ready",
		},
		{
			name: "rolling update stops an old replica once a new one is ready, and starts the next",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Revision = 2 })},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-2", "eu", "", 4, "RTX 4090")},
				Replicas: []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-2", 0),
					func() Replica { r := rep("i-3", "d-1", "m-1", 1); r.Revision = 2; return r }()},
			},
			// i-1 shares m-1 with the new replica, so it goes first
			want: []string{"place d-1 on m-2 [1]", "stop i-1 of d-1"},
		},
		{
			name: "rolling update with no room for an extra replica replaces one in place",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Revision = 2 })},
				Machines:    []Machine{mach("m-1", "eu", "", 1, "RTX 4090"), mach("m-2", "eu", "", 1, "RTX 4090")},
				Replicas: []Replica{rep("i-1", "d-1", "m-1", 0), func() Replica {
					r := rep("i-2", "d-1", "m-2", 0)
					r.CreatedAt = t0.Add(time.Minute)
					return r
				}()},
			},
			want: []string{"stop i-2 of d-1"},
			why:  "rolling update to revision 2",
		},
		{
			name: "rolling update on a full fleet stops one old replica per ready new one, not two",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Revision = 2 })},
				Machines:    []Machine{mach("m-1", "eu", "", 1, "RTX 4090"), mach("m-2", "eu", "", 1, "RTX 4090"), mach("m-3", "eu", "", 1, "RTX 4090")},
				Replicas: []Replica{rep("i-1", "d-1", "m-1", 0), func() Replica {
					r := rep("i-2", "d-1", "m-2", 0)
					r.CreatedAt = t0.Add(time.Minute)
					return r
				}(), func() Replica { r := rep("i-3", "d-1", "m-3", 0); r.Revision = 2; return r }()},
			},
			want:    []string{"stop i-2 of d-1"},
			pending: 1,
		},
		{
			name: "rolling update in place waits while an old replica stops",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Revision = 2 })},
				Machines:    []Machine{mach("m-1", "eu", "", 1, "RTX 4090"), mach("m-2", "eu", "", 2, "RTX 4090")},
				Replicas: []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-2", 0), func() Replica {
					r := rep("i-3", "d-1", "m-2", 1)
					r.Revision, r.State = 2, market.InstanceStopping
					return r
				}()},
			},
			want:    nil,
			pending: 1,
		},
		{
			name: "deleted deployment stops every replica",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 2, 2, func(d *market.Deployment) { d.Deleted = true })},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090")},
				Replicas:    []Replica{rep("i-1", "d-1", "m-1", 0), rep("i-2", "d-1", "m-1", 1)},
			},
			want: []string{"stop i-1 of d-1", "stop i-2 of d-1"},
		},
		{
			name: "a crash-looping deployment waits",
			in: Input{
				Now:         t0,
				Deployments: []market.Deployment{depl("d-1", 1, 1, 1)},
				Machines:    []Machine{mach("m-1", "eu", "", 4, "RTX 4090")},
				HoldUntil:   map[market.DeploymentID]time.Time{"d-1": t0.Add(time.Minute)},
			},
			want:    nil,
			pending: 1,
			why:     "keep failing to start",
		},
		{
			name: "higher priority first when capacity is short",
			in: Input{
				Deployments: []market.Deployment{
					depl("d-low", 2, 1, 1, func(d *market.Deployment) { d.Spec.Pool = "depin"; d.Spec.Priority = 1 }),
					depl("d-high", 2, 1, 1, func(d *market.Deployment) {
						d.Spec.Pool = "depin"
						d.Spec.Priority = 9
						d.CreatedAt = t0.Add(time.Hour)
					}),
				},
				Pools:    []market.Pool{{Name: "depin", ShareBP: 10000}},
				Machines: []Machine{pooled(mach("m-1", "eu", "", 2, "RTX 4090"), "depin")},
			},
			want:    []string{"place d-high on m-1 [0 1]"},
			pending: 1,
		},
		{
			name: "a pool deployment uses only pool machines, and the open market none",
			in: Input{
				Deployments: []market.Deployment{
					depl("d-open", 1, 1, 1),
					depl("d-pool", 1, 1, 1, func(d *market.Deployment) { d.Spec.Pool = "leasing" }),
				},
				Pools:    []market.Pool{{Name: "leasing", ShareBP: 10000}},
				Machines: []Machine{pooled(mach("m-pool", "eu", "", 2, "RTX 4090"), "leasing"), mach("m-open", "eu", "", 2, "RTX 4090")},
			},
			want: []string{"place d-open on m-open [0]", "place d-pool on m-pool [0]"},
		},
		{
			name: "a pool borrows idle capacity beyond its quota",
			in: Input{
				Deployments: []market.Deployment{depl("d-a", 1, 3, 3, func(d *market.Deployment) { d.Spec.Pool = "a" })},
				Pools:       []market.Pool{{Name: "a", ShareBP: 5000}, {Name: "b", ShareBP: 5000}},
				Machines:    []Machine{pooled(mach("m-1", "eu", "", 2, "RTX 4090"), "a"), pooled(mach("m-2", "eu", "", 2, "RTX 4090"), "b")},
			},
			// quota 2 of 4; the third replica borrows b's idle GPU
			want: []string{"place d-a on m-1 [0]", "place d-a on m-1 [1]", "place d-a on m-2 [0]"},
		},
		{
			name: "the owner pool reclaims borrowed capacity by preemption",
			in: func() Input {
				rs := []Replica{rep("i-1", "d-a", "m-1", 0), rep("i-2", "d-a", "m-1", 1), rep("i-3", "d-a", "m-2", 0), rep("i-4", "d-a", "m-2", 1)}
				for i := range rs {
					rs[i].CreatedAt = t0.Add(time.Duration(i) * time.Minute)
				}
				ms := []Machine{pooled(mach("m-1", "eu", "", 2, "RTX 4090"), "a"), pooled(mach("m-2", "eu", "", 2, "RTX 4090"), "b")}
				return Input{
					Deployments: []market.Deployment{
						depl("d-a", 1, 4, 4, func(d *market.Deployment) { d.Spec.Pool = "a" }),
						depl("d-b", 1, 1, 1, func(d *market.Deployment) { d.Spec.Pool = "b" }),
					},
					Pools:    []market.Pool{{Name: "a", ShareBP: 5000}, {Name: "b", ShareBP: 5000}},
					Machines: ms,
					Replicas: rs,
				}
			}(),
			// pool a runs 4 GPUs on a quota of 2: its newest replica gives way
			want:    []string{"preempt i-4 of d-a"},
			pending: 1,
			why:     "", // d-a is first and has nothing pending
		},
		{
			name: "reclaim waits for replicas already stopping",
			in: func() Input {
				rs := []Replica{rep("i-1", "d-a", "m-1", 0), rep("i-2", "d-a", "m-1", 1), rep("i-3", "d-a", "m-2", 0), rep("i-4", "d-a", "m-2", 1)}
				rs[3].State = market.InstanceStopping
				ms := []Machine{pooled(mach("m-1", "eu", "", 2, "RTX 4090"), "a"), pooled(mach("m-2", "eu", "", 2, "RTX 4090"), "b")}
				return Input{
					Deployments: []market.Deployment{
						depl("d-a", 1, 3, 3, func(d *market.Deployment) { d.Spec.Pool = "a" }),
						depl("d-b", 1, 1, 1, func(d *market.Deployment) { d.Spec.Pool = "b" }),
					},
					Pools:    []market.Pool{{Name: "a", ShareBP: 5000}, {Name: "b", ShareBP: 5000}},
					Machines: ms,
					Replicas: rs,
				}
			}(),
			want:    nil,
			pending: 1,
		},
		{
			name: "processes with a health check never share a machine",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 3, 3, func(d *market.Deployment) {
					d.Spec.Health = &market.HealthCheck{Port: 8080, Path: "/healthz"}
				})},
				Machines: []Machine{mach("m-1", "eu", "", 4, "RTX 4090"), mach("m-2", "eu", "", 4, "RTX 4090")},
			},
			want:    []string{"place d-1 on m-1 [0]", "place d-1 on m-2 [0]"},
			pending: 1,
		},
		{
			name: "an image needs a machine that runs containers",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 1, 1, 1, func(d *market.Deployment) { d.Spec.Image = "vllm/vllm" })},
				Machines: func() []Machine {
					docker := mach("m-docker", "eu", "", 1, "RTX 4090")
					docker.Runner = "docker"
					return []Machine{mach("m-proc", "eu", "", 4, "RTX 4090"), docker}
				}(),
			},
			want: []string{"place d-1 on m-docker [0]"},
		},
		{
			name: "a price cap excludes dearer machines",
			in: Input{
				Deployments: []market.Deployment{depl("d-1", 2, 1, 1, func(d *market.Deployment) { d.Spec.MaxPricePerDay = market.Tokens(30) })},
				Machines: func() []Machine {
					cheap, dear := mach("m-cheap", "eu", "", 2, "RTX 4090"), mach("m-dear", "eu", "", 2, "RTX 4090")
					cheap.PricePerGPUHour = market.Tokens(1) / 2
					dear.PricePerGPUHour = market.Tokens(1)
					return []Machine{dear, cheap}
				}(),
			},
			want: []string{"place d-1 on m-cheap [0 1]"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in.Now.IsZero() {
				tc.in.Now = t0
			}
			tc.in.Latency = latency
			tc.in.Machines = withUsed(tc.in.Machines, tc.in.Replicas)
			plan := Reconcile(tc.in, Config{})
			if diff := cmp.Diff(tc.want, summary(plan)); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			st := plan.Status[tc.in.Deployments[0].ID]
			pending := 0
			for _, s := range plan.Status {
				pending += s.Pending
			}
			if pending != tc.pending {
				t.Errorf("pending = %d, want %d (status %+v)", pending, tc.pending, plan.Status)
			}
			if tc.why != "" && !strings.Contains(st.Why, tc.why) {
				t.Errorf("why = %q, want it to contain %q", st.Why, tc.why)
			}
		})
	}
}

// TestReconcileConverges runs passes against a simulated coordinator that
// applies each plan, and checks a lost machine's replicas come back spread
// and that a full rolling update ends with every replica at the new
// revision, never fewer ready than desired.
func TestReconcileConverges(t *testing.T) {
	ms := []Machine{mach("m-1", "eu", "a", 2, "RTX 4090"), mach("m-2", "eu", "b", 2, "RTX 4090"), mach("m-3", "eu", "c", 2, "RTX 4090"), mach("m-4", "eu", "d", 2, "RTX 4090")}
	d := depl("d-1", 1, 3, 3)
	var reps []Replica
	next := 0
	apply := func(p Plan) {
		for _, s := range p.Stops {
			reps = slices.DeleteFunc(reps, func(r Replica) bool { return r.Instance == s.Instance })
		}
		for _, pl := range p.Places {
			next++
			reps = append(reps, Replica{Instance: market.InstanceID(fmt.Sprintf("i-%02d", next)), Deployment: pl.Deployment, Machine: pl.Machine,
				GPUs: pl.GPUs, State: market.InstanceRunning, Revision: pl.Revision, Ready: true, CreatedAt: t0.Add(time.Duration(next) * time.Second)})
		}
	}
	run := func(machines []Machine) Plan {
		in := Input{Now: t0, Deployments: []market.Deployment{d}, Replicas: slices.Clone(reps), Machines: withUsed(machines, reps)}
		p := Reconcile(in, Config{})
		apply(p)
		return p
	}
	run(ms)
	hosts := map[market.MachineID]bool{}
	for _, r := range reps {
		hosts[r.Machine] = true
	}
	if len(reps) != 3 || len(hosts) != 3 {
		t.Fatalf("after the first pass: %d replicas on %d hosts, want 3 on 3", len(reps), len(hosts))
	}
	// Lose the host of the first replica.
	lost := reps[0].Machine
	reps = reps[1:]
	alive := slices.DeleteFunc(slices.Clone(ms), func(m Machine) bool { return m.ID == lost })
	run(alive)
	hosts = map[market.MachineID]bool{}
	for _, r := range reps {
		hosts[r.Machine] = true
	}
	if len(reps) != 3 || len(hosts) != 3 || hosts[lost] {
		t.Fatalf("after losing %s: %d replicas on hosts %v, want 3 on 3 others", lost, len(reps), hosts)
	}
	// Rolling update to revision 2.
	d.Revision = 2
	for pass := 0; pass < 20; pass++ {
		p := run(alive)
		ready := 0
		for _, r := range reps {
			if r.Ready {
				ready++
			}
		}
		if ready < 3 {
			t.Fatalf("pass %d: %d ready replicas, want at least 3", pass, ready)
		}
		if len(p.Places) > 1 {
			t.Fatalf("pass %d placed %d replicas at once, want one at a time", pass, len(p.Places))
		}
		if len(p.Places) == 0 && len(p.Stops) == 0 {
			break
		}
	}
	for _, r := range reps {
		if r.Revision != 2 {
			t.Errorf("replica %s still at revision %d after the update", r.Instance, r.Revision)
		}
	}
	if len(reps) != 3 {
		t.Errorf("%d replicas after the update, want 3", len(reps))
	}
}

func TestParseScaleRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want market.ScaleRule
		err  string
	}{
		{in: "gpu_util>70%", want: market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 70}},
		{in: "queue>100", want: market.ScaleRule{Metric: market.ScaleQueue, Target: 100}},
		{in: "queue<100", err: "write METRIC>TARGET"},
		{in: "cpu>5", err: "unknown metric"},
		{in: "gpu_util>170%", err: "above 100%"},
		{in: "queue>0", err: "above zero"},
		{in: "queue>x", err: "not a number"},
	} {
		got, err := market.ParseScaleRule(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseScaleRule(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseScaleRule(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

// spotDepl is a spot deployment bidding 10 tokens per GPU-day.
func spotDepl(id string, gpus, n int) market.Deployment {
	return depl(id, gpus, n, n, func(d *market.Deployment) {
		d.Spec.Spot, d.Spec.MaxPricePerDay = true, market.Tokens(10)
	})
}

func TestReconcileSpot(t *testing.T) {
	bid := func(id, d, machine string, state market.BidState, inst string, since time.Time) Bid {
		return Bid{ID: market.BidID(id), Deployment: market.DeploymentID(d), Machine: market.MachineID(machine), State: state,
			Instance: market.InstanceID(inst), Revision: 1, Since: since}
	}
	won := func(r Replica, b string) Replica { r.Bid = market.BidID(b); return r }
	three := []Machine{mach("m-1", "eu", "", 2, "RTX 4090"), mach("m-2", "eu", "", 2, "RTX 4090"), mach("m-3", "eu", "", 2, "RTX 4090")}
	deleted := spotDepl("d-1", 1, 2)
	deleted.Deleted = true
	for _, tc := range []struct {
		name       string
		in         Input
		want       []string
		st         market.DeploymentStatus
		wantReason string // substring of the first place's reason
	}{
		{
			name: "bids for each replica, spread like on-demand, ignoring the on-demand price",
			in: Input{
				Deployments: []market.Deployment{spotDepl("d-1", 1, 2)},
				Machines: func() []Machine {
					ms := slices.Clone(three[:2])
					ms[1].PricePerGPUHour = market.Tokens(100) // dearer on demand than the bid: spot does not care
					return ms
				}(),
			},
			want: []string{"bid d-1 on m-1", "bid d-1 on m-2"},
			st:   market.DeploymentStatus{Replicas: 2},
		},
		{
			name: "open bids count as replicas, not ready",
			in: Input{
				Deployments: []market.Deployment{spotDepl("d-1", 1, 2)},
				Machines:    three,
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidActive, "", t0), bid("b-2", "d-1", "m-2", market.BidOutbid, "i-old", t0)},
			},
			st: market.DeploymentStatus{Replicas: 2},
		},
		{
			name: "a won bid is its instance, counted once",
			in: Input{
				Deployments: []market.Deployment{spotDepl("d-1", 1, 2)},
				Machines:    three,
				Replicas:    []Replica{won(rep("i-1", "d-1", "m-1", 0), "b-1")},
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidWinning, "i-1", t0), bid("b-2", "d-1", "m-2", market.BidActive, "", t0)},
			},
			st: market.DeploymentStatus{Replicas: 2, Ready: 1},
		},
		{
			name: "a bid outbid for long moves to another machine",
			in: Input{
				Now:         t0.Add(5 * time.Minute),
				Deployments: []market.Deployment{spotDepl("d-1", 1, 2)},
				Machines:    three,
				Replicas:    []Replica{won(rep("i-1", "d-1", "m-1", 0), "b-1")},
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidWinning, "i-1", t0), bid("b-2", "d-1", "m-2", market.BidOutbid, "i-2", t0)},
			},
			want:       []string{"bid d-1 on m-3", "stop b-2 of d-1"},
			st:         market.DeploymentStatus{Replicas: 2, Ready: 1},
			wantReason: "has not won",
		},
		{
			name: "a bid with nowhere else to go stays in the book",
			in: Input{
				Now:         t0.Add(5 * time.Minute),
				Deployments: []market.Deployment{spotDepl("d-1", 1, 1)},
				Machines:    three[:1],
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidOutbid, "i-1", t0)},
			},
			st: market.DeploymentStatus{Replicas: 1},
		},
		{
			name: "a recent outbid bid stays",
			in: Input{
				Now:         t0.Add(time.Minute),
				Deployments: []market.Deployment{spotDepl("d-1", 1, 1)},
				Machines:    three,
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidOutbid, "i-1", t0)},
			},
			st: market.DeploymentStatus{Replicas: 1},
		},
		{
			name: "scaling down cancels waiting bids first",
			in: Input{
				Deployments: []market.Deployment{spotDepl("d-1", 1, 1)},
				Machines:    three,
				Replicas:    []Replica{won(rep("i-1", "d-1", "m-1", 0), "b-1")},
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidWinning, "i-1", t0), bid("b-2", "d-1", "m-2", market.BidActive, "", t0)},
			},
			want: []string{"stop b-2 of d-1"},
			st:   market.DeploymentStatus{Replicas: 1, Ready: 1},
		},
		{
			name: "deleting cancels every bid and stops won instances",
			in: Input{
				Deployments: []market.Deployment{deleted},
				Machines:    three,
				Replicas:    []Replica{won(rep("i-1", "d-1", "m-1", 0), "b-1")},
				Bids:        []Bid{bid("b-1", "d-1", "m-1", market.BidWinning, "i-1", t0), bid("b-2", "d-1", "m-2", market.BidOutbid, "i-2", t0.Add(-time.Hour))},
			},
			want: []string{"stop b-2 of d-1", "stop i-1 b-1 of d-1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in.Now.IsZero() {
				tc.in.Now = t0
			}
			tc.in.Machines = withUsed(tc.in.Machines, tc.in.Replicas)
			plan := Reconcile(tc.in, Config{})
			if diff := cmp.Diff(tc.want, summary(plan)); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			st := plan.Status["d-1"]
			st.At, st.Why = time.Time{}, ""
			if diff := cmp.Diff(tc.st, st); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
			if tc.wantReason != "" && (len(plan.Places) == 0 || !strings.Contains(plan.Places[0].Reason, tc.wantReason)) {
				t.Errorf("places %+v: want a reason containing %q", plan.Places, tc.wantReason)
			}
		})
	}
}

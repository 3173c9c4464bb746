package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type deploymentCmd struct {
	Create deploymentCreateCmd `cmd:"" help:"Create a deployment: replicas kept running, spread over hosts and data centers."`
	Apply  deploymentApplyCmd  `cmd:"" help:"Create or update a deployment from a YAML or JSON spec file."`
	List   deploymentListCmd   `cmd:"" help:"List your deployments."`
	Show   deploymentShowCmd   `cmd:"" help:"Show a deployment: replicas, why any are pending, and its decisions with their reasons."`
	Scale  deploymentScaleCmd  `cmd:"" help:"Change a deployment's replica count or bounds."`
	Update deploymentUpdateCmd `cmd:"" help:"Change a deployment; a new image, command or env rolls out one replica at a time."`
	Delete deploymentDeleteCmd `cmd:"" help:"Delete a deployment; its replicas stop."`
}

// specFlags are the flags create and update share. Update changes only
// the flags given.
type specFlags struct {
	Image      string   `name:"image" placeholder:"IMAGE" help:"Container image of each replica (machines with the docker runner)."`
	GPUs       int      `name:"gpus-per-replica" placeholder:"N" help:"GPUs of each replica (create: default 1)."`
	Replicas   string   `name:"replicas" placeholder:"MIN..MAX" help:"Replica count, or bounds to scale between: 3 or 2..6 (create: default 1)."`
	Query      string   `name:"query" placeholder:"QUERY" help:"Offer query each replica's machine must match, as in 'gpumarket offer search' (e.g. 'gpu_name=RTX_4090 reliability>0.95')."`
	Regions    string   `name:"regions" placeholder:"R1,R2" help:"Preferred regions, in order; empty: anywhere."`
	MaxLatency string   `name:"max-latency" placeholder:"DURATION" help:"Use other regions within this latency of a preferred one when those are full, such as 80ms."`
	ScaleOn    string   `name:"scale-on" placeholder:"RULE" help:"Scale between the bounds on gpu_util>70% or queue>100 (per replica; the workload reports its queue to $GPUMARKET_QUEUE_URL). 'none' removes the rule."`
	Cooldown   string   `name:"cooldown" placeholder:"UP,DOWN" help:"Cooldowns after scaling, such as 1m,5m (the defaults)."`
	MaxStep    int      `name:"max-step" placeholder:"N" help:"At most this many replicas added or removed per scaling decision (default 2)."`
	Pool       string   `name:"pool" placeholder:"POOL" help:"Capacity pool to run in (see 'gpumarket admin pool list'); empty: the open market."`
	Priority   int      `name:"priority" default:"-1" placeholder:"N" help:"Priority within the pool, 0..1000: higher is placed first when capacity is short."`
	Spot       bool     `name:"spot" help:"Run each replica as a spot bid of --max-price-per-day per GPU-day on the machine the coordinator chooses; outbid replicas wait or move."`
	MaxPrice   string   `name:"max-price-per-day" placeholder:"TOKENS" help:"On demand: highest price of one replica per day; dearer machines are not used. With --spot: the bid per GPU-day."`
	PowerLimit int      `name:"power-limit" placeholder:"WATTS" help:"Spot replicas: power limit of each GPU (default: the machine's maximum)."`
	Env        []string `name:"env" sep:"none" placeholder:"KEY=VALUE" help:"Environment variable of each replica; repeat for more."`
	Grace      string   `name:"grace" placeholder:"DURATION" help:"SIGTERM-to-SIGKILL time of each replica, such as 30s."`
	Health     string   `name:"health" placeholder:"PORT/PATH" help:"HTTP health check the agent makes (2xx within 2 s), such as 8080/healthz; rolling updates wait for it. Plain-process replicas then never share a machine. 'none' removes any check."`
	HealthCmd  string   `name:"health-cmd" placeholder:"COMMAND" help:"Health check command the agent runs inside each replica with sh -c (in its container, or with its environment for plain processes): healthy when it exits 0, such as 'curl -fs localhost:8080/healthz'. Instead of --health."`
	HealthTime string   `name:"health-timeout" placeholder:"DURATION" help:"How long --health-cmd may run before it counts as failed (default 5s, at most 1m)."`
	Command    []string `arg:"" optional:"" passthrough:"" help:"Command and arguments of each replica, after --."`
}

// apply sets the flags that were given on spec.
func (f *specFlags) apply(spec *market.DeploymentSpec) error {
	if f.Spot {
		if f.MaxPrice == "" && spec.MaxPricePerDay == 0 {
			return usagef("--spot needs --max-price-per-day: the bid of each replica per GPU-day")
		}
		spec.Spot = true
	}
	if f.PowerLimit < 0 {
		return usagef("--power-limit must not be negative, got %d", f.PowerLimit)
	}
	if f.PowerLimit > 0 {
		spec.PowerLimitW = f.PowerLimit
	}
	if f.Image != "" {
		spec.Image = f.Image
	}
	if f.GPUs != 0 {
		spec.GPUsPerReplica = f.GPUs
	}
	if f.Replicas != "" {
		lo, hi, err := parseRange(f.Replicas)
		if err != nil {
			return usagef("--replicas: %v", err)
		}
		spec.MinReplicas, spec.MaxReplicas = lo, hi
	}
	if f.Query != "" {
		spec.Query = f.Query
	}
	if f.Regions != "" {
		spec.Regions = nil
		for _, r := range strings.Split(f.Regions, ",") {
			if r = strings.TrimSpace(r); r != "" {
				spec.Regions = append(spec.Regions, r)
			}
		}
	}
	if f.MaxLatency != "" {
		var d market.Duration
		if err := d.UnmarshalText([]byte(f.MaxLatency)); err != nil {
			return usagef("--max-latency: %v", err)
		}
		spec.MaxLatency = d
	}
	switch f.ScaleOn {
	case "":
	case "none":
		spec.Scale = nil
	default:
		r, err := market.ParseScaleRule(f.ScaleOn)
		if err != nil {
			return usagef("--scale-on: %v", err)
		}
		if spec.Scale != nil {
			r.UpCooldown, r.DownCooldown, r.MaxStep = spec.Scale.UpCooldown, spec.Scale.DownCooldown, spec.Scale.MaxStep
		}
		spec.Scale = &r
	}
	if f.Cooldown != "" || f.MaxStep != 0 {
		if spec.Scale == nil {
			return usagef("--cooldown and --max-step tune a scale rule; add --scale-on")
		}
	}
	if f.Cooldown != "" {
		up, down, _ := strings.Cut(f.Cooldown, ",")
		for _, p := range []struct {
			s string
			d *market.Duration
		}{{up, &spec.Scale.UpCooldown}, {down, &spec.Scale.DownCooldown}} {
			if p.s == "" {
				continue
			}
			if err := p.d.UnmarshalText([]byte(p.s)); err != nil {
				return usagef("--cooldown: %v; write UP,DOWN such as 1m,5m", err)
			}
		}
	}
	if f.MaxStep != 0 {
		spec.Scale.MaxStep = f.MaxStep
	}
	if f.Pool != "" {
		spec.Pool = f.Pool
	}
	if f.Priority >= 0 {
		spec.Priority = f.Priority
	}
	if f.MaxPrice != "" {
		p, err := market.ParseMoney(f.MaxPrice)
		if err != nil {
			return usagef("--max-price-per-day: %v", err)
		}
		spec.MaxPricePerDay = p
	}
	for _, kv := range f.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("--env %q: write it as KEY=VALUE", kv)
		}
		if spec.Env == nil {
			spec.Env = map[string]string{}
		}
		spec.Env[k] = v
	}
	switch {
	case f.HealthCmd != "" && strings.TrimSpace(f.HealthCmd) == "":
		return usagef("--health-cmd is blank; give the command to run in each replica, such as 'curl -fs localhost:8080/healthz'")
	case f.Health != "" && f.HealthCmd != "":
		return usagef("--health and --health-cmd: a replica has one health check; give one of them")
	case f.Health == "none":
		spec.Health = nil
	case f.Health != "":
		h, err := market.ParseHealthCheck(f.Health)
		if err != nil {
			return usagef("--health: %v", err)
		}
		spec.Health = &h
	case f.HealthCmd != "":
		spec.Health = &market.HealthCheck{Command: []string{"sh", "-c", f.HealthCmd}}
	}
	if f.HealthTime != "" {
		d, err := time.ParseDuration(f.HealthTime)
		if err != nil {
			return usagef("--health-timeout %q: write a duration such as 10s", f.HealthTime)
		}
		if spec.Health == nil || spec.Health.HTTP() {
			return usagef("--health-timeout applies to a health check command; add --health-cmd")
		}
		spec.Health.Timeout = market.Duration(d)
	}
	if spec.Health != nil {
		if err := spec.Health.Check(); err != nil {
			return usagef("%v", err)
		}
	}
	if f.Grace != "" {
		d, err := time.ParseDuration(f.Grace)
		if err != nil || d < 0 {
			return usagef("--grace %q: write a duration such as 30s", f.Grace)
		}
		spec.GraceSeconds = int((d + time.Second - 1) / time.Second)
	}
	cmd := f.Command
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) > 0 {
		spec.Command = cmd
	}
	return nil
}

// parseRange reads "3" (3..3) or "2..6".
func parseRange(s string) (int, int, error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "..")
	lo, err := strconv.Atoi(strings.TrimSpace(a))
	if err != nil {
		return 0, 0, fmt.Errorf("%q is not a count or MIN..MAX such as 2..6", s)
	}
	if !isRange {
		return lo, lo, nil
	}
	hi, err := strconv.Atoi(strings.TrimSpace(b))
	if err != nil || hi < lo {
		return 0, 0, fmt.Errorf("%q is not MIN..MAX with MIN <= MAX, such as 2..6", s)
	}
	return lo, hi, nil
}

type deploymentCreateCmd struct {
	Name string `arg:"" help:"Name of the deployment: lower-case letters, digits and -."`
	specFlags
}

func (c *deploymentCreateCmd) Help() string {
	return `The coordinator keeps between MIN and MAX replicas running, each an on-demand
instance of GPUS-PER-REPLICA GPUs billed to you by the minute (with one hour
held in escrow each). It replaces replicas lost with their host, spreads them
over hosts and data centers, prefers --regions in order and falls back to other
regions only within --max-latency, and scales on --scale-on with cooldowns.
'gpumarket deployment show NAME' says why a replica is pending.

Examples:
  gpumarket deployment create web --gpus-per-replica 1 --replicas 3 -- python serve.py
  gpumarket deployment create llm --image vllm/vllm-openai --gpus-per-replica 2 --replicas 2..8 \
      --query 'gpu_name=RTX_4090 reliability>0.95' --regions eu,us --max-latency 80ms --scale-on 'gpu_util>70%'
  gpumarket deployment create worker --replicas 1..10 --scale-on 'queue>100' --pool depin -- ./worker`
}

func (c *deploymentCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	spec := market.DeploymentSpec{Name: c.Name, GPUsPerReplica: 1, MinReplicas: 1, MaxReplicas: 1}
	if err := c.apply(&spec); err != nil {
		return err
	}
	d, err := api.CreateDeployment(ctx, spec)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(d)
	}
	fmt.Fprintf(env.Stdout, "Created deployment %s (%s): %s replicas of %d GPUs; the coordinator places them on its next pass.\n",
		d.Spec.Name, d.ID, replicaRange(d.Spec), d.Spec.GPUsPerReplica)
	fmt.Fprintf(env.Stdout, "Watch it with: gpumarket deployment show %s\n", d.Spec.Name)
	return nil
}

func replicaRange(s market.DeploymentSpec) string {
	if s.MinReplicas == s.MaxReplicas {
		return strconv.Itoa(s.MinReplicas)
	}
	return fmt.Sprintf("%d..%d", s.MinReplicas, s.MaxReplicas)
}

type deploymentApplyCmd struct {
	File string `name:"file" short:"f" required:"" placeholder:"PATH" help:"Spec file, YAML (.yaml, .yml) or JSON (.json); - reads standard input as YAML or JSON."`
}

func (c *deploymentApplyCmd) Help() string {
	return `The spec's fields are those of the API (GET /api/v1/openapi.json,
DeploymentSpec); unknown fields are an error. The deployment of that name is
created, or updated when it exists.

Example spec.yaml:
  name: llm
  image: vllm/vllm-openai:latest
  gpus_per_replica: 2
  min_replicas: 2
  max_replicas: 8
  query: gpu_name=RTX_4090 reliability>0.95
  regions: [eu, us]
  max_latency: 80ms
  scale: {metric: gpu_util, target: 70, up_cooldown: 1m, down_cooldown: 5m}
  health: {port: 8000, path: /health}   # or {command: [sh, -c, 'curl -fs localhost:8000/health'], timeout: 5s}
  env: {MODEL: llama-3-8b}

Examples:
  gpumarket deployment apply -f spec.yaml
  gpumarket deployment apply -f spec.json -o json`
}

// readSpec reads a deployment spec from YAML or JSON: YAML is turned into
// JSON first, so both use the API's field names and its strict decoding.
func readSpec(name string, data []byte) (market.DeploymentSpec, error) {
	var spec market.DeploymentSpec
	text := data
	ext := strings.ToLower(filepath.Ext(name))
	if ext != ".json" {
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return spec, fmt.Errorf("%s is not valid YAML: %v", name, err)
		}
		var err error
		if text, err = json.Marshal(v); err != nil {
			return spec, fmt.Errorf("%s: %v; use plain values (strings, numbers, lists, maps with string keys)", name, err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, fmt.Errorf("%s: %v (the fields are those of DeploymentSpec in /api/v1/openapi.json)", name, err)
	}
	return spec, nil
}

func (c *deploymentApplyCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	var data []byte
	var err error
	if c.File == "-" {
		data, err = io.ReadAll(env.Stdin)
	} else {
		data, err = os.ReadFile(c.File)
	}
	if err != nil {
		return usagef("read the spec: %v", err)
	}
	spec, err := readSpec(c.File, data)
	if err != nil {
		return usagef("%v", err)
	}
	res, err := api.ApplyDeployment(ctx, spec)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(res)
	}
	verb := "Updated"
	if res.Created {
		verb = "Created"
	}
	fmt.Fprintf(env.Stdout, "%s deployment %s (%s), revision %d: %s replicas of %d GPUs.\n", verb, res.Deployment.Spec.Name, res.Deployment.ID,
		res.Deployment.Revision, replicaRange(res.Deployment.Spec), res.Deployment.Spec.GPUsPerReplica)
	return nil
}

type deploymentListCmd struct {
	All bool `name:"all" help:"Admins: every account's deployments."`
}

func (c *deploymentListCmd) Help() string {
	return `Examples:
  gpumarket deployment list
  gpumarket deployment list -o json`
}

func (c *deploymentListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	ds, err := api.Deployments(ctx, c.All)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(ds)
	}
	t := newTable(env.Stdout, "NAME", "ID", "REPLICAS", "READY", "DESIRED", "BOUNDS", "GPUS", "POOL", "REV", "PENDING")
	for _, d := range ds {
		name := d.Spec.Name
		if d.Deleted {
			name += " (deleting)"
		}
		pending := "-"
		if d.Status.Pending > 0 {
			pending = fmt.Sprintf("%d: %s", d.Status.Pending, d.Status.Why)
		}
		t.row(name, string(d.ID), strconv.Itoa(d.Status.Replicas), strconv.Itoa(d.Status.Ready), strconv.Itoa(d.Desired),
			replicaRange(d.Spec), strconv.Itoa(d.Spec.GPUsPerReplica), dash(d.Spec.Pool), strconv.FormatInt(d.Revision, 10), pending)
	}
	return t.flush()
}

type deploymentShowCmd struct {
	Name string `arg:"" help:"Deployment name or ID."`
}

func (c *deploymentShowCmd) Help() string {
	return `Examples:
  gpumarket deployment show web
  gpumarket deployment show d-0a1b2c3d4e5f -o json`
}

func (c *deploymentShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	v, err := api.Deployment(ctx, c.Name)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(v)
	}
	s := v.Spec
	w := env.Stdout
	fmt.Fprintf(w, "Deployment %s (%s), revision %d", s.Name, v.ID, v.Revision)
	if v.Deleted {
		fmt.Fprint(w, ", being deleted")
	}
	fmt.Fprintln(w)
	run := dash(s.Image)
	if len(s.Command) > 0 {
		run = strings.TrimSpace(s.Image + " " + strings.Join(s.Command, " "))
	}
	fmt.Fprintf(w, "  runs        %s\n", run)
	fmt.Fprintf(w, "  replicas    %d desired (bounds %s), %d active, %d ready, %d pending; %d GPUs each\n",
		v.Desired, replicaRange(s), v.Status.Replicas, v.Status.Ready, v.Status.Pending, s.GPUsPerReplica)
	if v.Status.Why != "" {
		fmt.Fprintf(w, "  why         %s\n", v.Status.Why)
	}
	if s.Query != "" {
		fmt.Fprintf(w, "  query       %s\n", s.Query)
	}
	if len(s.Regions) > 0 {
		lat := ""
		if s.MaxLatency > 0 {
			lat = fmt.Sprintf(", others within %s", time.Duration(s.MaxLatency))
		}
		fmt.Fprintf(w, "  regions     %s%s\n", strings.Join(s.Regions, ","), lat)
	}
	if s.Scale != nil {
		fmt.Fprintf(w, "  scale on    %s per replica\n", s.Scale)
	}
	if s.Pool != "" {
		fmt.Fprintf(w, "  pool        %s, priority %d\n", s.Pool, s.Priority)
	}
	if h := s.Health; h != nil && h.HTTP() {
		fmt.Fprintf(w, "  health      GET :%d%s\n", h.Port, h.Path)
	} else if h != nil {
		fmt.Fprintf(w, "  health      %s (exit 0 within %s)\n", strings.Join(h.Command, " "), h.CommandTimeout())
	}
	switch {
	case s.Spot:
		power := "each machine's maximum"
		if s.PowerLimitW > 0 {
			power = fmt.Sprintf("%d W", s.PowerLimitW)
		}
		fmt.Fprintf(w, "  spot        bids %s per GPU-day, power limit %s\n", money(s.MaxPricePerDay, ""), power)
	case s.MaxPricePerDay > 0:
		fmt.Fprintf(w, "  max price   %s per replica-day\n", money(s.MaxPricePerDay, ""))
	}
	fmt.Fprintln(w)
	t := newTable(w, "REPLICA", "MACHINE", "GPUS", "STATE", "REV", "CREATED")
	for _, r := range v.Replicas {
		t.row(string(r.ID), string(r.Machine), ints(r.GPUs), string(r.State), strconv.FormatInt(r.DeploymentRevision, 10), env.time(r.CreatedAt))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(v.Bids) > 0 {
		fmt.Fprintln(w, "\nSpot bids:")
		t = newTable(w, "BID", "MACHINE", "STATE", "REPLICA", "PRICE/GPU-DAY")
		for _, b := range v.Bids {
			t.row(string(b.ID), string(b.Machine), bidReplicaState(b.State), dash(string(b.Instance)), money(b.PricePerGPUDay, ""))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nDecisions, newest first:")
	t = newTable(w, "TIME", "KIND", "REPLICA", "MACHINE", "REASON")
	for _, h := range v.History {
		t.row(env.time(h.At), h.Kind, dash(string(h.Instance)), dash(string(h.Machine)), h.Message)
	}
	return t.flush()
}

// bidReplicaState says what a spot replica's bid means for the replica.
func bidReplicaState(s market.BidState) string {
	switch s {
	case market.BidActive:
		return "bidding"
	case market.BidWinning:
		return "running"
	}
	return string(s) // outbid
}

type deploymentScaleCmd struct {
	Name     string `arg:"" help:"Deployment name or ID."`
	Replicas string `name:"replicas" placeholder:"N|MIN..MAX" help:"A replica count (within the bounds, or fixing them when there is no scale rule), or new bounds MIN..MAX."`
	Min      *int   `name:"min" placeholder:"N" help:"New lower bound."`
	Max      *int   `name:"max" placeholder:"N" help:"New upper bound."`
}

func (c *deploymentScaleCmd) Help() string {
	return `Examples:
  gpumarket deployment scale web --replicas 5
  gpumarket deployment scale web --replicas 2..10
  gpumarket deployment scale web --max 20`
}

func (c *deploymentScaleCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	req := market.ScaleRequest{MinReplicas: c.Min, MaxReplicas: c.Max}
	if c.Replicas != "" {
		lo, hi, err := parseRange(c.Replicas)
		if err != nil {
			return usagef("--replicas: %v", err)
		}
		if strings.Contains(c.Replicas, "..") {
			req.MinReplicas, req.MaxReplicas = &lo, &hi
		} else {
			req.Replicas = &lo
		}
	}
	if req == (market.ScaleRequest{}) {
		return usagef("say how to scale: --replicas N, --replicas MIN..MAX, --min or --max")
	}
	d, err := api.ScaleDeployment(ctx, c.Name, req)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(d)
	}
	fmt.Fprintf(env.Stdout, "Deployment %s: %d replicas desired, bounds %s.\n", d.Spec.Name, d.Desired, replicaRange(d.Spec))
	return nil
}

type deploymentUpdateCmd struct {
	Name string `arg:"" help:"Deployment name or ID."`
	specFlags
}

func (c *deploymentUpdateCmd) Help() string {
	return `Only the flags given change. A new image, command, env, GPU count or grace
starts a rolling update: one new replica at a time, an old one stopped only
once the new one runs.

Examples:
  gpumarket deployment update web --image myorg/web:v2
  gpumarket deployment update web --scale-on 'queue>50' --replicas 1..20
  gpumarket deployment update web -- python serve.py --port 9000`
}

func (c *deploymentUpdateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	cur, err := api.Deployment(ctx, c.Name)
	if err != nil {
		return err
	}
	spec := cur.Spec
	if err := c.apply(&spec); err != nil {
		return err
	}
	d, err := api.UpdateDeployment(ctx, string(cur.ID), spec)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(d)
	}
	if d.Revision != cur.Revision {
		fmt.Fprintf(env.Stdout, "Deployment %s: rolling update to revision %d, one replica at a time.\n", d.Spec.Name, d.Revision)
	} else {
		fmt.Fprintf(env.Stdout, "Deployment %s updated (revision %d unchanged).\n", d.Spec.Name, d.Revision)
	}
	return nil
}

type deploymentDeleteCmd struct {
	Name string `arg:"" help:"Deployment name or ID."`
}

func (c *deploymentDeleteCmd) Help() string {
	return `Example:
  gpumarket deployment delete web`
}

func (c *deploymentDeleteCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	d, err := api.DeleteDeployment(ctx, c.Name)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(d)
	}
	fmt.Fprintf(env.Stdout, "Deleting deployment %s: its replicas stop on the coordinator's next pass, then it is gone.\n", d.Spec.Name)
	return nil
}

// serveQueue listens on addr and serves the agent's queue endpoint until
// ctx ends.
func serveQueue(ctx context.Context, addr string, log *slog.Logger) (*agent.QueueServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("--queue-addr %s: %v; give HOST:PORT (port 0 for a free one), auto, or \"\" to turn the endpoint off", addr, err)
	}
	q := agent.NewQueueServer("http://" + ln.Addr().String())
	srv := &http.Server{Handler: q.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("queue endpoint stopped", "err", err)
		}
	}()
	if log != nil {
		log.Info("workloads report queue lengths here", "url", "http://"+ln.Addr().String()+"/v1/queue/")
	}
	return q, nil
}

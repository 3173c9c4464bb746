package docker

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/gpumarket/gpumarket/internal/market"
)

// testImage is built from testdata/testimage by scripts/test.
const testImage = "gpumarket-test:latest"

var nsSeq atomic.Int64

// unavailable skips a test that needs something this machine lacks, except
// in CI, where the Docker tests must run.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and the Docker tests cannot run: "+format, args...)
	}
	t.Skipf("SKIPPING DOCKER TEST: "+format, args...)
}

// newRunner returns a runner on a fresh namespace whose containers are
// removed when the test ends.
func newRunner(t testing.TB, opt Options) *Runner {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Docker daemon; skipped under -short")
	}
	if opt.Namespace == "" {
		opt.Namespace = testNamespace(t)
	}
	if !opt.NoGPUDevices {
		opt.NoGPUDevices = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := New(ctx, opt)
	if err != nil {
		unavailable(t, "%v", err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.cli.ImageInspect(ctx, testImage); err != nil {
		unavailable(t, "test image %s is missing (%v); scripts/test builds it", testImage, err)
	}
	return r
}

// testNamespace returns a namespace of its own for a test, and removes its
// containers at the end.
func testNamespace(t testing.TB) string {
	ns := "gmtest-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatInt(nsSeq.Add(1), 10)
	t.Cleanup(func() {
		cli, err := client.New(client.FromEnv)
		if err != nil {
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", LabelNamespace+"="+ns)})
		if err != nil {
			return
		}
		for _, c := range res.Items {
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
		}
	})
	return ns
}

func assignment(id string, args ...string) market.Assignment {
	return market.Assignment{
		Instance: market.InstanceID(id), Generation: 1, Desired: market.DesiredRun,
		GPUs: []int{0, 2}, GPUUUIDs: []string{"GPU-a", "GPU-c"},
		Image: testImage, Command: args,
		Env: map[string]string{"FOO": "bar", "NVIDIA_VISIBLE_DEVICES": "all"},
	}
}

// logs collects drained output per instance and stream across calls.
type logs map[string]*strings.Builder

func (l logs) until(t *testing.T, r *Runner, id market.InstanceID, stream, want string) string {
	t.Helper()
	key := string(id) + "/" + stream
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		chunks, err := r.Drain(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			k := string(c.Instance) + "/" + c.Stream
			if l[k] == nil {
				l[k] = &strings.Builder{}
			}
			l[k].WriteString(c.Data)
		}
		if l[key] != nil && strings.Contains(l[key].String(), want) {
			return l[key].String()
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := ""
	if l[key] != nil {
		got = l[key].String()
	}
	t.Fatalf("%s of %s = %q, want it to contain %q", stream, id, got, want)
	return ""
}

func report(t *testing.T, r *Runner, id market.InstanceID) market.InstanceReport {
	t.Helper()
	l, err := r.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range l {
		if rep.Instance == id {
			return rep
		}
	}
	t.Fatalf("List has no %s: %+v", id, l)
	return market.InstanceReport{}
}

// waitEnded polls List until id is no longer starting or running.
func waitEnded(t *testing.T, r *Runner, id market.InstanceID) market.InstanceReport {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rep := report(t, r, id)
		if !running(rep.State) {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after 20s", id, rep.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ptr(i int) *int { return &i }

// containersOf lists the namespace's containers of one instance.
func containersOf(t *testing.T, r *Runner, id market.InstanceID) []container.Summary {
	t.Helper()
	cs, err := r.containers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(cs, func(c container.Summary) bool { return c.Labels[LabelInstance] != string(id) })
}

func TestRunLogsAndExit(t *testing.T) {
	r := newRunner(t, Options{})
	ctx := t.Context()
	a := assignment("i-1", "-print", "hello", "-stderr", "oops",
		"-env", "FOO,NVIDIA_VISIBLE_DEVICES,GPUMARKET_GPU_UUIDS,GPUMARKET_GPU_INDICES,GPUMARKET_INSTANCE", "-exit", "3")
	if err := r.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	l := logs{}
	want := "hello\nFOO=bar\nNVIDIA_VISIBLE_DEVICES=void\nGPUMARKET_GPU_UUIDS=GPU-a,GPU-c\nGPUMARKET_GPU_INDICES=0,2\nGPUMARKET_INSTANCE=i-1\n"
	if out := l.until(t, r, "i-1", "stdout", "INSTANCE"); out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	if out := l.until(t, r, "i-1", "stderr", "oops"); out != "oops\n" {
		t.Errorf("stderr = %q, want %q", out, "oops\n")
	}
	got := waitEnded(t, r, "i-1")
	if diff := cmp.Diff(market.InstanceReport{Instance: "i-1", Generation: 1, State: market.ObservedExited, ExitCode: ptr(3), Message: "exited 3"}, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if err := r.Start(ctx, a); !market.IsKind(err, market.Conflict) {
		t.Errorf("Start of a finished instance: %v, want Conflict", err)
	}
	if err := r.Forget(ctx, "i-1"); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.List(ctx); len(l) != 0 {
		t.Errorf("List after Forget = %+v, want empty", l)
	}
	if cs := containersOf(t, r, "i-1"); len(cs) != 0 {
		t.Errorf("containers after Forget: %d, want 0", len(cs))
	}
}

func TestStopGraceAndKill(t *testing.T) {
	r := newRunner(t, Options{})
	ctx := t.Context()
	for _, a := range []market.Assignment{
		assignment("i-trap", "-term", "exit", "-sleep", "60s"),
		assignment("i-ignore", "-term", "ignore", "-sleep", "60s"),
		assignment("i-plain", "-print", "ready", "-sleep", "60s"),
	} {
		if err := r.Start(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	l := logs{}
	for _, id := range []market.InstanceID{"i-trap", "i-ignore", "i-plain"} {
		l.until(t, r, id, "stdout", "ready")
	}
	if err := r.Start(ctx, assignment("i-trap", "-print", "second")); err != nil {
		t.Errorf("Start of a running instance: %v, want nil (left alone)", err)
	}
	if n := len(containersOf(t, r, "i-trap")); n != 1 {
		t.Errorf("containers of i-trap: %d, want 1", n)
	}
	if err := r.Forget(ctx, "i-trap"); !market.IsKind(err, market.Conflict) {
		t.Errorf("Forget of a running instance: %v, want Conflict", err)
	}

	for _, tt := range []struct {
		id    market.InstanceID
		grace time.Duration
		want  market.InstanceReport
	}{
		{"i-trap", 20 * time.Second, market.InstanceReport{Instance: "i-trap", Generation: 1, State: market.ObservedStopped, ExitCode: ptr(0)}},
		// The init passes SIGTERM on; a process without a handler dies of it.
		{"i-plain", 20 * time.Second, market.InstanceReport{Instance: "i-plain", Generation: 1, State: market.ObservedStopped, ExitCode: ptr(143), Message: "exited 143"}},
		{"i-ignore", 500 * time.Millisecond, market.InstanceReport{Instance: "i-ignore", Generation: 1, State: market.ObservedStopped, ExitCode: ptr(137),
			Message: "exited 137 (killed: it did not stop within its grace period)"}},
	} {
		t.Run(string(tt.id), func(t *testing.T) {
			start := time.Now()
			if err := r.Stop(ctx, tt.id, tt.grace); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if diff := cmp.Diff(tt.want, report(t, r, tt.id)); diff != "" {
				t.Errorf("after Stop (-want +got):\n%s", diff)
			}
			killed := *tt.want.ExitCode == 137
			if killed && took < tt.grace {
				t.Errorf("Stop of a TERM-ignoring process returned after %v, before its grace %v", took, tt.grace)
			}
			if !killed && took > 10*time.Second {
				t.Errorf("Stop took %v for a process that ends on SIGTERM", took)
			}
		})
	}
	l.until(t, r, "i-trap", "stdout", "got SIGTERM")
	if err := r.Stop(ctx, "i-unknown", time.Second); err != nil {
		t.Errorf("Stop of an unknown instance: %v, want nil", err)
	}
	if err := r.Stop(ctx, "i-trap", time.Second); err != nil {
		t.Errorf("Stop of a stopped instance: %v, want nil", err)
	}
}

func TestOutOfMemory(t *testing.T) {
	r := newRunner(t, Options{MemoryBytes: 32 << 20})
	info, err := r.cli.Info(t.Context(), client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Info.MemoryLimit {
		t.Skip("the daemon says this kernel does not support memory limits")
	}
	if err := r.Start(t.Context(), assignment("i-oom", "-alloc-mib", "256")); err != nil {
		t.Fatal(err)
	}
	got := waitEnded(t, r, "i-oom")
	if got.ExitCode != nil && *got.ExitCode == 0 {
		t.Skipf("the kernel did not enforce the 32 MiB memory limit (the program allocated 256 MiB): %+v", got)
	}
	want := market.InstanceReport{Instance: "i-oom", Generation: 1, State: market.ObservedExited, ExitCode: ptr(137), Message: "exited 137 (out of memory)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
}

// A runner started after an agent restart adopts the running container,
// reports the ended one, removes one that was never started, never starts
// a second container, and can stop and remove what it adopted.
func TestAdoptAfterRestart(t *testing.T) {
	ns := testNamespace(t)
	old := newRunner(t, Options{Namespace: ns})
	ctx := t.Context()
	if err := old.Start(ctx, assignment("i-run", "-term", "exit", "-sleep", "60s")); err != nil {
		t.Fatal(err)
	}
	a := assignment("i-done", "-exit", "7")
	a.Generation = 4
	if err := old.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	logs{}.until(t, old, "i-run", "stdout", "ready")
	waitEnded(t, old, "i-done")
	// A container whose agent died between create and start.
	spec, err := Spec(assignment("i-created", "-print", "never"), Options{Namespace: ns, NoGPUDevices: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: ns + "-i-created", Config: spec.Config, HostConfig: spec.HostConfig}); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	r := newRunner(t, Options{Namespace: ns})
	got, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []market.InstanceReport{
		{Instance: "i-done", Generation: 4, State: market.ObservedExited, ExitCode: ptr(7), Message: "exited 7"},
		{Instance: "i-run", Generation: 1, State: market.ObservedRunning},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("adopted List (-want +got):\n%s", diff)
	}
	if cs := containersOf(t, r, "i-created"); len(cs) != 0 {
		t.Errorf("the never-started container is still there: %+v", cs)
	}
	if err := r.Start(ctx, assignment("i-run", "-print", "twice")); err != nil {
		t.Errorf("Start of an adopted running instance: %v", err)
	}
	if n := len(containersOf(t, r, "i-run")); n != 1 {
		t.Errorf("containers of i-run: %d, want 1", n)
	}
	// The coordinator no longer wants i-run: the agent stops and forgets it.
	if err := r.Stop(ctx, "i-run", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	logs{}.until(t, r, "i-run", "stdout", "got SIGTERM") // followed after adoption
	if rep := report(t, r, "i-run"); rep.State != market.ObservedStopped || rep.ExitCode == nil || *rep.ExitCode != 0 {
		t.Errorf("adopted instance after Stop = %+v, want stopped with exit code 0", rep)
	}
	for _, id := range []market.InstanceID{"i-run", "i-done"} {
		if err := r.Forget(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if cs, _ := r.containers(ctx); len(cs) != 0 {
		t.Errorf("containers left after Forget: %d, want 0", len(cs))
	}
}

func TestMissingImage(t *testing.T) {
	r := newRunner(t, Options{PullTimeout: 30 * time.Second})
	a := assignment("i-missing", "-print", "hi")
	a.Image = "gpumarket-test-missing:nope"
	start := time.Now()
	err := r.Start(t.Context(), a)
	const want = "image not found: gpumarket-test-missing:nope"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Start = %v, want an error containing %q", err, want)
	}
	t.Logf("failed after %v: %v", time.Since(start), err)
	got := report(t, r, "i-missing")
	if got.State != market.ObservedFailed || !strings.HasPrefix(got.Message, want) {
		t.Errorf("List = %+v, want failed with a message starting %q", got, want)
	}
	logs{}.until(t, r, "i-missing", "system", want)
	if err := r.Forget(t.Context(), "i-missing"); err != nil {
		t.Fatal(err)
	}

	a = assignment("i-noimage", "-print", "hi")
	a.Image = ""
	if err := r.Start(t.Context(), a); err == nil || !strings.Contains(err.Error(), "give an image") {
		t.Errorf("Start without an image = %v, want an error asking for one", err)
	}
}

func TestHardening(t *testing.T) {
	r := newRunner(t, Options{MemoryBytes: 256 << 20, PidsLimit: 100})
	ctx := t.Context()
	if err := r.Start(ctx, assignment("i-hard", "-sleep", "60s")); err != nil {
		t.Fatal(err)
	}
	cs := containersOf(t, r, "i-hard")
	if len(cs) != 1 {
		t.Fatalf("containers of i-hard: %d, want 1", len(cs))
	}
	res, err := r.cli.ContainerInspect(ctx, cs[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Container
	h := c.HostConfig
	type hardening struct {
		Privileged                      bool
		CapAdd, CapDrop, SecurityOpt    []string
		NetworkMode, PidMode, IpcMode   string
		UsernsMode                      string
		Binds                           []string
		Mounts, DeviceRequests, Devices int
		PidsLimit, Memory, MemorySwap   int64
		Init                            bool
		RestartPolicy                   string
		Labels                          map[string]string
		ContainerMounts                 int
	}
	got := hardening{
		Privileged: h.Privileged, CapAdd: h.CapAdd, CapDrop: h.CapDrop, SecurityOpt: h.SecurityOpt,
		NetworkMode: string(h.NetworkMode), PidMode: string(h.PidMode), IpcMode: string(h.IpcMode),
		UsernsMode: string(h.UsernsMode), Binds: h.Binds, Mounts: len(h.Mounts),
		DeviceRequests: len(h.DeviceRequests), Devices: len(h.Devices),
		Memory: h.Memory, MemorySwap: h.MemorySwap, Init: h.Init != nil && *h.Init,
		RestartPolicy: string(h.RestartPolicy.Name), Labels: c.Config.Labels, ContainerMounts: len(c.Mounts),
	}
	if h.PidsLimit != nil {
		got.PidsLimit = *h.PidsLimit
	}
	want := hardening{
		CapDrop: []string{"CAP_ALL"}, SecurityOpt: []string{"no-new-privileges:true"},
		NetworkMode: "bridge", IpcMode: "private",
		PidsLimit: 100, Memory: 256 << 20, MemorySwap: 256 << 20, Init: true, RestartPolicy: "no",
		Labels: map[string]string{LabelNamespace: r.opt.Namespace, LabelInstance: "i-hard", LabelGeneration: "1"},
	}
	if len(got.CapDrop) == 1 && got.CapDrop[0] == "ALL" {
		got.CapDrop = []string{"CAP_ALL"} // older daemons keep the spelling
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HostConfig (-want +got):\n%s", diff)
	}
	env := slices.Clone(c.Config.Env)
	sort.Strings(env)
	if !slices.Contains(env, "NVIDIA_VISIBLE_DEVICES=void") || slices.Contains(env, "NVIDIA_VISIBLE_DEVICES=all") {
		t.Errorf("container env %q: want NVIDIA_VISIBLE_DEVICES=void and never all", env)
	}
	if err := r.Stop(ctx, "i-hard", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// A hostile image cannot mount, reach the Docker socket, use root's
// capabilities or exhaust the host's processes.
func TestHostileImage(t *testing.T) {
	const pids = 64
	r := newRunner(t, Options{PidsLimit: pids})
	ctx := t.Context()
	if err := r.Start(ctx, assignment("i-hostile", "-hostile", "-sleep", "60s")); err != nil {
		t.Fatal(err)
	}
	out := logs{}.until(t, r, "i-hostile", "stdout", "forks:")
	for _, want := range []string{
		"mount: operation not permitted\n",
		"/var/run/docker.sock: absent\n",
		"/run/docker.sock: absent\n",
		"chown: operation not permitted\n",
		"(resource temporarily unavailable)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("hostile output lacks %q:\n%s", want, out)
		}
	}
	var forks int
	if i := strings.Index(out, "forks: "); i >= 0 {
		fmt.Sscanf(out[i:], "forks: %d", &forks)
	}
	if forks >= pids {
		t.Errorf("the fork bomb started %d processes, want fewer than the pids limit %d", forks, pids)
	}
	if err := r.Stop(ctx, "i-hostile", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if rep := report(t, r, "i-hostile"); rep.State != market.ObservedStopped {
		t.Errorf("after Stop: %+v, want stopped", rep)
	}
}

// Spec is pure: GPUs go by UUID to the nvidia driver, never "all".
func TestSpecGPUs(t *testing.T) {
	a := assignment("i-gpu", "-print", "x")
	spec, err := Spec(a, Options{}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: []string{"GPU-a", "GPU-c"}, Capabilities: [][]string{{"gpu"}}}}
	if diff := cmp.Diff(want, spec.HostConfig.DeviceRequests); diff != "" {
		t.Errorf("DeviceRequests (-want +got):\n%s", diff)
	}
	if !slices.Contains(spec.Config.Env, "NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-c") {
		t.Errorf("env %q lacks NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-c", spec.Config.Env)
	}

	if _, err := Spec(a, Options{}, false); !market.IsKind(err, market.Unavailable) || !strings.Contains(err.Error(), "NVIDIA Container Toolkit") {
		t.Errorf("Spec with GPUs on a host without the nvidia runtime: %v, want Unavailable naming the toolkit", err)
	}
	spec, err = Spec(a, Options{NoGPUDevices: true}, false)
	if err != nil || len(spec.HostConfig.DeviceRequests) != 0 || !slices.Contains(spec.Config.Env, "NVIDIA_VISIBLE_DEVICES=void") {
		t.Errorf("Spec with NoGPUDevices: %v, %+v, env %q; want no devices and NVIDIA_VISIBLE_DEVICES=void", err, spec.HostConfig.DeviceRequests, spec.Config.Env)
	}
	a.GPUs, a.GPUUUIDs = nil, nil
	spec, err = Spec(a, Options{}, false)
	if err != nil || len(spec.HostConfig.DeviceRequests) != 0 {
		t.Errorf("Spec without GPUs: %v, %+v; want no devices", err, spec.HostConfig.DeviceRequests)
	}
}

func TestExitMessage(t *testing.T) {
	for _, tt := range []struct {
		code         int
		oom, killed  bool
		daemon, want string
	}{
		{0, false, false, "", ""},
		{3, false, false, "", "exited 3"},
		{137, true, false, "", "exited 137 (out of memory)"},
		{137, false, true, "", "exited 137 (killed: it did not stop within its grace period)"},
		{127, false, false, "exec failed", "exited 127: exec failed"},
	} {
		if got := exitMessage(tt.code, tt.oom, tt.killed, tt.daemon); got != tt.want {
			t.Errorf("exitMessage(%d, %v, %v, %q) = %q, want %q", tt.code, tt.oom, tt.killed, tt.daemon, got, tt.want)
		}
	}
}

// BenchmarkStartLatency measures Start (create and start of a local image,
// returning once the container runs); p50 and p99 are reported. Run with
// -benchtime=100x.
func BenchmarkStartLatency(b *testing.B) {
	r := newRunner(b, Options{})
	ctx := context.Background()
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		id := market.InstanceID("i-bench-" + strconv.Itoa(i))
		start := time.Now()
		if err := r.Start(ctx, assignment(string(id), "-sleep", "60s")); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		if err := r.Stop(ctx, id, 0); err != nil {
			b.Fatal(err)
		}
		if err := r.Forget(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(took)
	q := func(p float64) float64 { return float64(took[int(p*float64(len(took)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

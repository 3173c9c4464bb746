package docker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
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
		// Networks too: the daemon has room for a few dozen.
		nets, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", LabelNamespace+"="+ns)})
		if err != nil {
			return
		}
		for _, n := range nets.Items {
			cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
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
	spec, err := Spec(assignment("i-created", "-print", "never"), Options{Namespace: ns, NoGPUDevices: true}, HostInfo{})
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
	// Pulls run in the background: Start returns at once, and List says
	// how the start ended.
	if err := r.Start(t.Context(), a); err != nil {
		t.Fatalf("Start of an image to pull = %v, want nil (pulled in the background)", err)
	}
	start := time.Now()
	got := waitEnded(t, r, "i-missing")
	// A registry that answers says it has no such image; where none can
	// be reached (as on the development machine) the pull fails.
	want := "image not found: gpumarket-test-missing:nope"
	if strings.HasPrefix(got.Message, "pull failed: ") {
		want = "pull failed: gpumarket-test-missing:nope"
	}
	t.Logf("failed after %v: %s", time.Since(start), got.Message)
	if got.State != market.ObservedFailed || !strings.HasPrefix(got.Message, want) {
		t.Errorf("List = %+v, want failed with a message starting %q", got, want)
	}
	l := logs{}
	l.until(t, r, "i-missing", "system", "pulling image gpumarket-test-missing:nope")
	l.until(t, r, "i-missing", "system", want)
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
		NetworkMode: r.opt.Namespace + "-i-hard", IpcMode: "private",
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

// Spec is pure: GPUs go by UUID, as CDI names where the host has a CDI
// spec, else to the nvidia driver; never "all".
func TestSpecGPUs(t *testing.T) {
	a := assignment("i-gpu", "-print", "x")
	for _, tt := range []struct {
		name string
		host HostInfo
		want []container.DeviceRequest
	}{
		{"nvidia runtime", HostInfo{Nvidia: true},
			[]container.DeviceRequest{{Driver: "nvidia", DeviceIDs: []string{"GPU-a", "GPU-c"}, Capabilities: [][]string{{"gpu"}}}}},
		{"cdi", HostInfo{CDI: true},
			[]container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{"nvidia.com/gpu=GPU-a", "nvidia.com/gpu=GPU-c"}}}},
		{"cdi and nvidia runtime", HostInfo{Nvidia: true, CDI: true},
			[]container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{"nvidia.com/gpu=GPU-a", "nvidia.com/gpu=GPU-c"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Spec(a, Options{}, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, spec.HostConfig.DeviceRequests); diff != "" {
				t.Errorf("DeviceRequests (-want +got):\n%s", diff)
			}
			for _, d := range spec.HostConfig.DeviceRequests {
				if d.Count != 0 || slices.Contains(d.DeviceIDs, "all") || slices.Contains(d.DeviceIDs, "nvidia.com/gpu=all") {
					t.Errorf("device request %+v asks for all GPUs or a count", d)
				}
			}
			if !slices.Contains(spec.Config.Env, "NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-c") {
				t.Errorf("env %q lacks NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-c", spec.Config.Env)
			}
		})
	}

	if _, err := Spec(a, Options{}, HostInfo{}); !market.IsKind(err, market.Unavailable) || !strings.Contains(err.Error(), "NVIDIA Container Toolkit") {
		t.Errorf("Spec with GPUs on a host without the nvidia runtime: %v, want Unavailable naming the toolkit", err)
	}
	if _, err := Spec(a, Options{}, HostInfo{Nvidia: true, GPUBlocked: "toolkit 1.16.1 is unsafe"}); !market.IsKind(err, market.Unavailable) || !strings.Contains(err.Error(), "toolkit 1.16.1 is unsafe") {
		t.Errorf("Spec with GPUs on a host with an unsafe toolkit: %v, want Unavailable saying why", err)
	}
	spec, err := Spec(a, Options{NoGPUDevices: true}, HostInfo{})
	if err != nil || len(spec.HostConfig.DeviceRequests) != 0 || !slices.Contains(spec.Config.Env, "NVIDIA_VISIBLE_DEVICES=void") {
		t.Errorf("Spec with NoGPUDevices: %v, %+v, env %q; want no devices and NVIDIA_VISIBLE_DEVICES=void", err, spec.HostConfig.DeviceRequests, spec.Config.Env)
	}
	a.GPUs, a.GPUUUIDs = nil, nil
	spec, err = Spec(a, Options{}, HostInfo{GPUBlocked: "unsafe"})
	if err != nil || len(spec.HostConfig.DeviceRequests) != 0 {
		t.Errorf("Spec without GPUs: %v, %+v; want no devices (and no refusal)", err, spec.HostConfig.DeviceRequests)
	}
}

func TestHasNvidiaCDISpec(t *testing.T) {
	empty, yaml, json, other := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	for dir, name := range map[string]string{yaml: "nvidia.yaml", json: "nvidia.json", other: "amd.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("cdiVersion: 0.5.0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(empty, "nvidia.yaml"), 0o755); err != nil { // a directory is no spec
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		dirs []string
		want bool
	}{
		{"none", nil, false},
		{"missing dir", []string{filepath.Join(empty, "nope")}, false},
		{"directory named nvidia.yaml", []string{empty}, false},
		{"other vendor", []string{other}, false},
		{"yaml", []string{empty, yaml}, true},
		{"json", []string{json}, true},
	} {
		if got := HasNvidiaCDISpec(tt.dirs); got != tt.want {
			t.Errorf("%s: HasNvidiaCDISpec = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Spec applies the assignment's limits (zero ones from Options), ports,
// network and SSH hardening.
func TestSpecLimitsPortsSSH(t *testing.T) {
	a := assignment("i-spec", "-sleep", "1s")
	a.GPUs, a.GPUUUIDs = nil, nil
	a.Limits = market.Limits{CPUMillis: 1500, MemoryMiB: 512, ShmMiB: 128, DiskGiB: 20}
	a.Ports = []string{"8888/tcp", "53/udp"}
	a.SSHKeys = []string{"ssh-ed25519 AAAA x"}
	host := HostInfo{Network: "gm-i-spec", HostPorts: map[string]int{"8888/tcp": 40001, "53/udp": 40002}}
	spec, err := Spec(a, Options{PidsLimit: 99, CapAdd: []string{"NET_BIND_SERVICE"}}, host)
	if err != nil {
		t.Fatal(err)
	}
	h := spec.HostConfig
	got := struct {
		NanoCPUs, Memory, Swap, Shm, Pids int64
		Storage                           map[string]string
		Network                           string
		CapAdd, ReadonlyPaths             []string
		Bindings                          map[string]string
		Exposed                           []string
	}{h.NanoCPUs, h.Memory, h.MemorySwap, h.ShmSize, *h.PidsLimit, h.StorageOpt, string(h.NetworkMode), h.CapAdd, h.ReadonlyPaths, map[string]string{}, nil}
	for p, bs := range h.PortBindings {
		got.Bindings[p.String()] = bs[0].HostPort
	}
	for p := range spec.Config.ExposedPorts {
		got.Exposed = append(got.Exposed, p.String())
	}
	slices.Sort(got.Exposed)
	want := got
	want.NanoCPUs, want.Memory, want.Swap, want.Shm, want.Pids = 1_500_000_000, 512<<20, 512<<20, 128<<20, 99
	want.Storage = nil // the host has no disk quotas
	want.Network = "gm-i-spec"
	want.CapAdd = append([]string{"NET_BIND_SERVICE"}, SSHCaps...)
	want.ReadonlyPaths = append(slices.Clone(defaultReadonlyPaths), market.SSHKeysPath)
	want.Bindings = map[string]string{"8888/tcp": "40001", "53/udp": "40002"}
	want.Exposed = []string{"53/udp", "8888/tcp"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Spec (-want +got):\n%s", diff)
	}
	host.DiskQuota = true
	if spec, _ = Spec(a, Options{}, host); !maps.Equal(spec.HostConfig.StorageOpt, map[string]string{"size": "20G"}) {
		t.Errorf("StorageOpt with disk quotas = %v, want size=20G", spec.HostConfig.StorageOpt)
	}
	a.Limits, a.SSHKeys, a.Ports = market.Limits{}, nil, nil
	spec, _ = Spec(a, Options{MemoryBytes: 64 << 20, NanoCPUs: 2e9}, HostInfo{})
	if h := spec.HostConfig; h.Memory != 64<<20 || h.NanoCPUs != 2e9 || *h.PidsLimit != DefaultPidsLimit || h.CapAdd != nil || h.ReadonlyPaths != nil || h.NetworkMode != "bridge" {
		t.Errorf("Spec without limits, keys or network: memory %d, cpus %d, pids %d, caps %v, readonly %v, network %s; want the options' limits, no caps, Docker's read-only paths and the default bridge",
			h.Memory, h.NanoCPUs, *h.PidsLimit, h.CapAdd, h.ReadonlyPaths, h.NetworkMode)
	}
}

func TestDiskQuota(t *testing.T) {
	for _, tt := range []struct {
		driver string
		status [][2]string
		want   bool
	}{
		{"overlay2", [][2]string{{"Backing Filesystem", "extfs"}}, false},
		{"overlay2", [][2]string{{"Backing Filesystem", "xfs"}}, true},
		{"fuse-overlayfs", nil, false},
		{"vfs", nil, false},
		{"btrfs", nil, true},
		{"zfs", nil, true},
	} {
		if got := diskQuota(tt.driver, tt.status); got != tt.want {
			t.Errorf("diskQuota(%s, %v) = %v, want %v", tt.driver, tt.status, got, tt.want)
		}
	}
}

func TestPullFailure(t *testing.T) {
	for _, tt := range []struct{ err, want string }{
		{"Error response from daemon: pull access denied for nope, repository does not exist or may require 'docker login'", "image not found: x"},
		{"Error response from daemon: manifest for x:1 not found: manifest unknown", "image not found: x"},
		{"Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host", "pull failed: x (Get"},
		{"no progress within 10m0s", "pull failed: x (no progress"},
	} {
		if got := pullFailure("x", errors.New(tt.err)); !strings.HasPrefix(got, tt.want) {
			t.Errorf("pullFailure(%q) = %q, want it to start %q", tt.err, got, tt.want)
		}
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

// testKey is a well-formed ed25519 public key (its blob names its type).
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3dTfE0sOGUsJ8C5m0bMvbH0cW3o3kqY8Y1l5u1xq3 renter@laptop"

// An instance gets a network of its own, its ports published on the
// host's range and reachable, its SSH keys read-only, and its limits; a
// restarted runner adopts the ports and removes orphaned networks; Forget
// removes the network and frees the ports.
func TestPortsSSHNetworkLimits(t *testing.T) {
	pr := market.PortRange{First: 41000 + int(time.Now().UnixNano()%500), Last: 0}
	pr.Last = pr.First + 20
	ns := testNamespace(t)
	opt := Options{Namespace: ns, PortRange: pr, PublicHost: "gpu1.example.net"}
	r := newRunner(t, opt)
	ctx := t.Context()
	a := assignment("i-net", "-listen", ":8888", "-cat", market.SSHKeysPath, "-sleep", "60s")
	a.GPUs, a.GPUUUIDs = nil, nil
	a.Ports = []string{"8888/tcp"}
	a.SSHKeys = []string{testKey}
	a.Limits = market.Limits{CPUMillis: 500, MemoryMiB: 128, Pids: 50, ShmMiB: 16, DiskGiB: 1}
	if err := r.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	l := logs{}
	out := l.until(t, r, "i-net", "stdout", "listening on")
	for _, want := range []string{
		fmt.Sprintf("content: %q\n", testKey+"\n"),
		"mode: -r--r--r--\n",
		"chmod: read-only file system\n", // the read-only bind
		"remove: device or resource busy\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("SSH keys file: output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "write: ok") {
		t.Errorf("the container could write its SSH keys file:\n%s", out)
	}

	rep := report(t, r, "i-net")
	if len(rep.Ports) != 1 || rep.Ports[0].Port != "8888/tcp" || rep.Ports[0].Host != "gpu1.example.net" ||
		rep.Ports[0].HostPort < pr.First || rep.Ports[0].HostPort > pr.Last {
		t.Fatalf("reported ports %+v, want 8888/tcp on gpu1.example.net at a port in %s", rep.Ports, pr)
	}
	hostPort := rep.Ports[0].HostPort
	greeting := dialGreeting(t, hostPort)
	if greeting != "hello from testprog\n" {
		t.Errorf("port %d answered %q, want the test program's greeting", hostPort, greeting)
	}

	cs := containersOf(t, r, "i-net")
	if len(cs) != 1 {
		t.Fatalf("containers of i-net: %d, want 1", len(cs))
	}
	res, err := r.cli.ContainerInspect(ctx, cs[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := res.Container.HostConfig
	type applied struct {
		NanoCPUs, Memory, Shm, Pids int64
		Network                     string
		CapAdd                      []string
		Mounts                      int
		Storage                     map[string]string
	}
	got := applied{h.NanoCPUs, h.Memory, h.ShmSize, *h.PidsLimit, string(h.NetworkMode), h.CapAdd, len(res.Container.Mounts), h.StorageOpt}
	want := applied{5e8, 128 << 20, 16 << 20, 50, ns + "-i-net", SSHCaps, 0, nil}
	if r.Host().DiskQuota {
		want.Storage = map[string]string{"size": "1G"}
	}
	for i, c := range got.CapAdd {
		got.CapAdd[i] = strings.TrimPrefix(c, "CAP_") // newer daemons add the prefix
	}
	slices.Sort(got.CapAdd)
	want.CapAdd = slices.Sorted(slices.Values(SSHCaps))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("container (-want +got):\n%s", diff)
	}
	if !r.Host().DiskQuota {
		l.until(t, r, "i-net", "system", "disk limit of 1 GiB not enforced: the storage driver "+r.StorageDriver())
	}
	netw, err := r.cli.NetworkInspect(ctx, ns+"-i-net", client.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("the instance's network: %v", err)
	}
	if netw.Network.Driver != "bridge" || netw.Network.Labels[LabelInstance] != "i-net" || netw.Network.Labels[LabelNamespace] != ns {
		t.Errorf("network %+v, want a bridge labelled with the instance and namespace", netw.Network)
	}

	// A network left by a dead agent, with no container: removed on adopt.
	if _, err := r.cli.NetworkCreate(ctx, ns+"-i-orphan", client.NetworkCreateOptions{Driver: "bridge",
		Labels: map[string]string{LabelNamespace: ns, LabelInstance: "i-orphan"}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = newRunner(t, opt)
	if rep := report(t, r, "i-net"); len(rep.Ports) != 1 || rep.Ports[0].HostPort != hostPort {
		t.Errorf("adopted instance reports ports %+v, want 8888/tcp at %d", rep.Ports, hostPort)
	}
	if _, err := r.cli.NetworkInspect(ctx, ns+"-i-orphan", client.NetworkInspectOptions{}); err == nil {
		t.Errorf("the orphaned network %s-i-orphan survived adoption", ns)
	}
	// A second instance does not get the adopted one's host port.
	b := assignment("i-net2", "-listen", ":8888", "-sleep", "60s")
	b.GPUs, b.GPUUUIDs, b.Ports = nil, nil, []string{"8888/tcp"}
	if err := r.Start(ctx, b); err != nil {
		t.Fatal(err)
	}
	if rep := report(t, r, "i-net2"); len(rep.Ports) != 1 || rep.Ports[0].HostPort == hostPort {
		t.Errorf("second instance's ports %+v, want one other than %d", rep.Ports, hostPort)
	}

	for _, id := range []market.InstanceID{"i-net", "i-net2"} {
		if err := r.Stop(ctx, id, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := r.Forget(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := r.cli.NetworkInspect(ctx, ns+"-"+string(id), client.NetworkInspectOptions{}); err == nil {
			t.Errorf("network of %s survived Forget", id)
		}
	}
	r.mu.Lock()
	held := len(r.ports)
	r.mu.Unlock()
	if held != 0 {
		t.Errorf("%d host ports still held after Forget", held)
	}
}

// dialGreeting reads what the server on 127.0.0.1:port says, retrying
// while the container's program starts listening.
func dialGreeting(t *testing.T, port int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 64)
			n, _ := c.Read(b)
			c.Close()
			if n > 0 {
				return string(b[:n])
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answers on 127.0.0.1:%d: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNoPortRange(t *testing.T) {
	r := newRunner(t, Options{})
	a := assignment("i-noports", "-sleep", "1s")
	a.GPUs, a.GPUUUIDs, a.Ports = nil, nil, []string{"8888/tcp"}
	err := r.Start(t.Context(), a)
	if err == nil || !strings.Contains(err.Error(), "--port-range") {
		t.Fatalf("Start with ports on a runner without a range: %v, want an error naming --port-range", err)
	}
	if rep := report(t, r, "i-noports"); rep.State != market.ObservedFailed {
		t.Errorf("report %+v, want failed", rep)
	}
	if err := r.Forget(t.Context(), "i-noports"); err != nil {
		t.Fatal(err)
	}
}

// A stop while the image is being pulled gives up the pull: the instance
// ends stopped and no container is left. The registry here accepts
// connections and never answers, as a slow one would.
func TestStopDuringPull(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	r := newRunner(t, Options{PullTimeout: time.Minute})
	a := assignment("i-slow", "-print", "hi")
	a.GPUs, a.GPUUUIDs = nil, nil
	a.Image = l.Addr().String() + "/slow:1"
	begin := time.Now()
	if err := r.Start(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Start took %v with a registry that never answers; it must not wait for the pull", took)
	}
	if rep := report(t, r, "i-slow"); rep.State != market.ObservedStarting {
		t.Errorf("while pulling: %+v, want starting", rep)
	}
	logs{}.until(t, r, "i-slow", "system", "pulling image "+a.Image)
	if err := r.Stop(t.Context(), "i-slow", time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 20*time.Second {
		t.Errorf("Stop during a pull returned after %v", took)
	}
	if rep := report(t, r, "i-slow"); rep.State != market.ObservedStopped {
		t.Errorf("after Stop: %+v, want stopped", rep)
	}
	if cs := containersOf(t, r, "i-slow"); len(cs) != 0 {
		t.Errorf("containers of i-slow: %d, want 0", len(cs))
	}
	if err := r.Forget(t.Context(), "i-slow"); err != nil {
		t.Fatal(err)
	}
}

// Instances of different rentals cannot reach each other: each has its
// own network.
func TestNetworksIsolateRentals(t *testing.T) {
	r := newRunner(t, Options{})
	ctx := t.Context()
	a := assignment("i-server", "-listen", ":8888", "-sleep", "60s")
	a.GPUs, a.GPUUUIDs = nil, nil
	if err := r.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	logs{}.until(t, r, "i-server", "stdout", "listening on")
	cs := containersOf(t, r, "i-server")
	if len(cs) != 1 {
		t.Fatalf("containers of i-server: %d", len(cs))
	}
	res, err := r.cli.ContainerInspect(ctx, cs[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ip string
	for name, ep := range res.Container.NetworkSettings.Networks {
		if name == r.opt.Namespace+"-i-server" && ep.IPAddress.IsValid() {
			ip = ep.IPAddress.String()
		}
	}
	if ip == "" {
		t.Fatalf("i-server has no address on its own network: %+v", res.Container.NetworkSettings.Networks)
	}
	// The host reaches it (the server runs), another rental does not.
	b := assignment("i-client", "-dial", ip+":8888")
	b.GPUs, b.GPUUUIDs = nil, nil
	if err := r.Start(ctx, b); err != nil {
		t.Fatal(err)
	}
	out := logs{}.until(t, r, "i-client", "stdout", "dial ")
	if strings.Contains(out, ": ok") {
		t.Errorf("an instance of another rental reached i-server at %s: %s", ip, out)
	}
	t.Logf("other rental: %s", strings.TrimSpace(out))
	if err := r.Stop(ctx, "i-server", time.Second); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkNetworkCost measures what a network per instance adds to Start:
// it alternates starts with a network of their own (the runner's way) and
// on Docker's default bridge, so that both see the same load, and reports
// the p50 of each. Run with -benchtime=100x (100 starts of each).
func BenchmarkNetworkCost(b *testing.B) {
	own := newRunner(b, Options{})
	shared := newRunner(b, Options{sharedBridge: true})
	ctx := context.Background()
	var took [2][]time.Duration
	for i := 0; b.Loop(); i++ {
		for k, r := range []*Runner{own, shared} {
			id := market.InstanceID("i-cost-" + strconv.Itoa(i))
			start := time.Now()
			if err := r.Start(ctx, assignment(string(id), "-sleep", "60s")); err != nil {
				b.Fatal(err)
			}
			took[k] = append(took[k], time.Since(start))
			b.StopTimer()
			if err := r.Stop(ctx, id, 0); err != nil {
				b.Fatal(err)
			}
			if err := r.Forget(ctx, id); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	b.ReportMetric(p50(took[0]), "own-network-p50-ms")
	b.ReportMetric(p50(took[1]), "default-bridge-p50-ms")
}

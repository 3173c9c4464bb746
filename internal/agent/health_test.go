package agent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/process"
)

var cmdCheck = market.HealthCheck{Command: []string{"sh", "-c", "test -e ready"}, Timeout: market.Duration(3 * time.Second)}

func TestHealthURL(t *testing.T) {
	h := market.HealthCheck{Port: 8080, Path: "/healthz"}
	for _, tc := range []struct {
		ports []market.PortBinding
		want  string
	}{
		{nil, "http://127.0.0.1:8080/healthz"},
		{[]market.PortBinding{{Port: "9000/tcp", HostPort: 40001}, {Port: "8080/tcp", HostPort: 40002}}, "http://127.0.0.1:40002/healthz"},
		{[]market.PortBinding{{Port: "8080/udp", HostPort: 40003}}, "http://127.0.0.1:8080/healthz"},
	} {
		if got := healthURL(h, tc.ports); got != tc.want {
			t.Errorf("healthURL(%v) = %s, want %s", tc.ports, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want market.HealthCheck
		err  bool
	}{
		{in: "8080 /healthz", want: h},
		{in: "8080/healthz", want: h},
		{in: "8080/", want: market.HealthCheck{Port: 8080, Path: "/"}},
		{in: "http/healthz", err: true},
		{in: "70000/x", err: true},
		{in: cmdCheck.String(), want: cmdCheck},
		{in: `{"command": ["true"], "port": 80}`, err: true},
		{in: `{"command": ["true"], "timeout": "2m"}`, err: true},
	} {
		got, err := market.ParseHealthCheck(tc.in)
		if (err != nil) != tc.err || (!tc.err && !cmp.Equal(got, tc.want)) {
			t.Errorf("ParseHealthCheck(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestProber(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	as := market.Assignment{Instance: "i-1", Env: map[string]string{market.HealthEnv: port + " /healthz"}}
	var p prober
	now := time.Now()
	get := func() *bool {
		t.Helper()
		var got *bool
		for range 100 {
			if got = p.result(t.Context(), nil, as, market.InstanceReport{}, now); got != nil {
				return got
			}
			time.Sleep(10 * time.Millisecond)
		}
		return got
	}
	if got := get(); got == nil || !*got {
		t.Fatalf("healthy server: result %v, want true", got)
	}
	healthy.Store(false)
	// Not due yet: the old result stands.
	if got := p.result(t.Context(), nil, as, market.InstanceReport{}, now.Add(time.Second)); got == nil || !*got {
		t.Errorf("before the next probe is due: %v, want the previous true", got)
	}
	now = now.Add(healthEvery)
	p.result(t.Context(), nil, as, market.InstanceReport{}, now)
	p.wait()
	if got := p.result(t.Context(), nil, as, market.InstanceReport{}, now); got == nil || *got {
		t.Errorf("failing server: %v, want false", got)
	}
	if got := p.result(t.Context(), nil, market.Assignment{Instance: "i-2"}, market.InstanceReport{}, now); got != nil {
		t.Errorf("no health check: %v, want nil", got)
	}
	p.forget("i-1")
	p.wait()
}

// TestProberCommand runs a command check with the process runner: in the
// instance's directory, healthy once it exits 0, unhealthy past its
// timeout, and unhealthy on a runner that cannot run commands.
func TestProberCommand(t *testing.T) {
	run, err := process.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	as := market.Assignment{Instance: "i-1", Generation: 1, Desired: market.DesiredRun,
		Command: []string{"sh", "-c", "exec sleep 30"}, Env: map[string]string{market.HealthEnv: cmdCheck.String()}}
	if err := run.Start(t.Context(), as); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Stop(context.Background(), as.Instance, 0) })
	var p prober
	defer p.wait()
	now := time.Now()
	check := func(r Runner, as market.Assignment) *bool {
		t.Helper()
		now = now.Add(healthEvery)
		p.result(t.Context(), r, as, market.InstanceReport{}, now)
		p.wait()
		return p.result(t.Context(), r, as, market.InstanceReport{}, now)
	}
	if got := check(run, as); got == nil || *got {
		t.Fatalf("before the file exists: %v, want false", got)
	}
	// Checks run in the instance's working directory.
	if code, err := run.Exec(t.Context(), as, []string{"touch", "ready"}); err != nil || code != 0 {
		t.Fatalf("touch ready: %d, %v", code, err)
	}
	if got := check(run, as); got == nil || !*got {
		t.Fatalf("once the check passes: %v, want true", got)
	}
	// The agent wraps its runner to apply GPU settings; the wrapper must
	// not hide Exec (it did, and every command check failed).
	p.forget("i-1")
	if got := check(WithGPUControl(run, nil), as); got == nil || !*got {
		t.Fatalf("through the GPU control wrapper: %v, want true", got)
	}
	slow := as
	slow.Env = map[string]string{market.HealthEnv: market.HealthCheck{Command: []string{"sleep", "30"}, Timeout: market.Duration(time.Second)}.String()}
	start := time.Now()
	if got := check(run, slow); got == nil || *got {
		t.Errorf("a command past its timeout: %v, want false", got)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a command with a 1s timeout held the check %s", d)
	}
	p.forget("i-1")
	if got := check(noExec{}, as); got == nil || *got {
		t.Errorf("runner without Exec: %v, want false", got)
	}
	p.forget("i-1")
	if got := check(WithGPUControl(noExec{}, nil), as); got == nil || *got {
		t.Errorf("wrapped runner without Exec: %v, want false", got)
	}
}

// noExec is a Runner that cannot run commands in instances.
type noExec struct{ Runner }

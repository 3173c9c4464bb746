package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

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
	} {
		got, err := market.ParseHealthCheck(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
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
			if got = p.result(t.Context(), as, market.InstanceReport{}, now); got != nil {
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
	if got := p.result(t.Context(), as, market.InstanceReport{}, now.Add(time.Second)); got == nil || !*got {
		t.Errorf("before the next probe is due: %v, want the previous true", got)
	}
	now = now.Add(healthEvery)
	p.result(t.Context(), as, market.InstanceReport{}, now)
	p.wait()
	if got := p.result(t.Context(), as, market.InstanceReport{}, now); got == nil || *got {
		t.Errorf("failing server: %v, want false", got)
	}
	if got := p.result(t.Context(), market.Assignment{Instance: "i-2"}, market.InstanceReport{}, now); got != nil {
		t.Errorf("no health check: %v, want nil", got)
	}
	p.forget("i-1")
	p.wait()
}

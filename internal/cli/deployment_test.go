package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
		err    string
	}{
		{in: "3", lo: 3, hi: 3},
		{in: "2..6", lo: 2, hi: 6},
		{in: " 0..1 ", lo: 0, hi: 1},
		{in: "6..2", err: "MIN <= MAX"},
		{in: "two", err: "not a count"},
		{in: "1..x", err: "MIN..MAX"},
	} {
		lo, hi, err := parseRange(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseRange(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || lo != tc.lo || hi != tc.hi {
			t.Errorf("parseRange(%q) = %d, %d, %v; want %d, %d", tc.in, lo, hi, err, tc.lo, tc.hi)
		}
	}
}

func TestParseShare(t *testing.T) {
	for _, tc := range []struct {
		in  string
		bp  int64
		err string
	}{
		{in: "45%", bp: 4500},
		{in: "5", bp: 500},
		{in: "12.5%", bp: 1250},
		{in: "0.05%", bp: 5},
		{in: "100%", bp: 10000},
		{in: "100.5%", err: "above 100%"},
		{in: "101%", err: "between 0% and 100%"},
		{in: "1.234%", err: "two decimals"},
		{in: "half", err: "percentage"},
	} {
		bp, err := parseShare(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseShare(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || bp != tc.bp {
			t.Errorf("parseShare(%q) = %d, %v; want %d", tc.in, bp, err, tc.bp)
		}
	}
}

func TestReadSpec(t *testing.T) {
	want := market.DeploymentSpec{Name: "llm", Image: "vllm/vllm-openai:latest", GPUsPerReplica: 2, MinReplicas: 2, MaxReplicas: 8,
		Query: "gpu_name=RTX_4090 reliability>0.95", Regions: []string{"eu", "us"}, MaxLatency: market.Duration(80 * time.Millisecond),
		Scale: &market.ScaleRule{Metric: market.ScaleGPUUtil, Target: 70, UpCooldown: market.Duration(time.Minute), DownCooldown: market.Duration(5 * time.Minute)},
		Env:   map[string]string{"MODEL": "llama-3-8b"}, MaxPricePerDay: market.Tokens(30), Health: &market.HealthCheck{Port: 8000, Path: "/health"}}
	yamlSpec := `name: llm
image: vllm/vllm-openai:latest
gpus_per_replica: 2
min_replicas: 2
max_replicas: 8
query: gpu_name=RTX_4090 reliability>0.95
regions: [eu, us]
max_latency: 80ms
max_price_per_day: "30"
scale: {metric: gpu_util, target: 70, up_cooldown: 1m, down_cooldown: 5m}
env: {MODEL: llama-3-8b}
health: {port: 8000, path: /health}
`
	jsonSpec := `{"name":"llm","image":"vllm/vllm-openai:latest","gpus_per_replica":2,"min_replicas":2,"max_replicas":8,
"query":"gpu_name=RTX_4090 reliability>0.95","regions":["eu","us"],"max_latency":"80ms","max_price_per_day":"30",
"scale":{"metric":"gpu_util","target":70,"up_cooldown":"1m","down_cooldown":"5m"},"env":{"MODEL":"llama-3-8b"},"health":{"port":8000,"path":"/health"}}`
	for name, data := range map[string]string{"spec.yaml": yamlSpec, "spec.json": jsonSpec, "-": yamlSpec} {
		got, err := readSpec(name, []byte(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", name, d)
		}
	}
	for _, tc := range []struct{ name, data, err string }{
		{"bad.yaml", "name: [", "not valid YAML"},
		{"typo.yaml", "name: x\ngpus: 2\n", `unknown field "gpus"`},
		{"latency.json", `{"name":"x","max_latency":"soon"}`, "like 80ms"},
	} {
		if _, err := readSpec(tc.name, []byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("readSpec(%s) error %v, want %q", tc.name, err, tc.err)
		}
	}
}

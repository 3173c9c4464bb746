package cli

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gpumarket/gpumarket/internal/agent"
	"github.com/gpumarket/gpumarket/internal/market"
)

// gpuGauges exposes the agent's latest GPU readings as Prometheus gauges.
// It records what the agent's own sampling read for its reports, so a
// scrape never runs nvidia-smi or NVML itself.
type gpuGauges struct {
	mu   sync.Mutex
	last []market.GPUSample
}

var gpuGaugeDescs = []struct {
	desc *prometheus.Desc
	val  func(market.GPUSample) float64
}{
	{prometheus.NewDesc("gpumarket_agent_gpu_utilization_percent", "GPU utilisation at the last reading, 0-100.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return s.UtilPct }},
	{prometheus.NewDesc("gpumarket_agent_gpu_memory_used_bytes", "GPU memory in use at the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return float64(s.MemUsedMiB) * (1 << 20) }},
	{prometheus.NewDesc("gpumarket_agent_gpu_power_watts", "GPU power draw at the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return s.PowerW }},
	{prometheus.NewDesc("gpumarket_agent_gpu_power_limit_watts", "GPU power limit in force at the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return float64(s.PowerLimitW) }},
	{prometheus.NewDesc("gpumarket_agent_gpu_temperature_celsius", "GPU core temperature at the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return s.TempC }},
	{prometheus.NewDesc("gpumarket_agent_gpu_core_clock_mhz", "GPU graphics clock at the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return float64(s.CoreMHz) }},
	{prometheus.NewDesc("gpumarket_agent_gpu_memory_clock_mhz", "GPU memory clock at the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return float64(s.MemMHz) }},
	{prometheus.NewDesc("gpumarket_agent_gpu_reading_timestamp_seconds", "Unix time of the last reading.", []string{"gpu", "uuid"}, nil),
		func(s market.GPUSample) float64 { return float64(s.At.UnixNano()) / 1e9 }},
}

// Describe implements prometheus.Collector.
func (g *gpuGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range gpuGaugeDescs {
		ch <- d.desc
	}
}

// Collect implements prometheus.Collector.
func (g *gpuGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	last := g.last
	g.mu.Unlock()
	for _, s := range last {
		for _, d := range gpuGaugeDescs {
			ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, d.val(s), strconv.Itoa(s.Index), s.UUID)
		}
	}
}

// wrap returns a sampler that records each successful reading of s.
func (g *gpuGauges) wrap(s agent.Sampler) agent.Sampler {
	if s == nil {
		return nil
	}
	return recordingSampler{s: s, g: g}
}

type recordingSampler struct {
	s agent.Sampler
	g *gpuGauges
}

func (r recordingSampler) Sample(ctx context.Context) ([]market.GPUSample, error) {
	out, err := r.s.Sample(ctx)
	if err == nil {
		r.g.mu.Lock()
		r.g.last = append(r.g.last[:0:0], out...)
		r.g.mu.Unlock()
	}
	return out, err
}

// agentMetrics listens on addr for Prometheus scrapes of the agent's GPU
// gauges and Go runtime metrics. It binds at once, so a taken port is an
// error before the agent starts; serve runs until ctx ends.
type agentMetrics struct {
	gauges *gpuGauges
	ln     net.Listener
	srv    *http.Server
}

func listenAgentMetrics(addr string) (*agentMetrics, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("--metrics-addr %s: %v", addr, err)
	}
	m := &agentMetrics{gauges: &gpuGauges{}, ln: ln}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.gauges, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return m, nil
}

func (m *agentMetrics) serve(ctx context.Context, log *slog.Logger) {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = m.srv.Shutdown(sctx)
	}()
	if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("agent metrics server", "err", err)
	}
}

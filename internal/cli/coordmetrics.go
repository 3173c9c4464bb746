package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// coordCollector exposes the coordinator's totals (machines by status,
// GPUs, instances, ledger balances) and the durations of its background
// steps. Totals are read from the store at each scrape, in one
// transaction bounded by gaugeTimeout.
type coordCollector struct {
	svc *coord.Service
	log *slog.Logger
}

const gaugeTimeout = 5 * time.Second

var (
	descMachines   = prometheus.NewDesc("gpumarket_machines", "Machines by status (listed, unlisted, unverified, offline).", []string{"status"}, nil)
	descGPUs       = prometheus.NewDesc("gpumarket_gpus", "GPUs of all registered machines.", nil, nil)
	descGPUsRented = prometheus.NewDesc("gpumarket_gpus_rented", "GPUs held by active instances (on demand and spot).", nil, nil)
	descInstances  = prometheus.NewDesc("gpumarket_instances_active", "Instances that have not ended, by state.", []string{"state"}, nil)
	descLedger     = prometheus.NewDesc("gpumarket_ledger_balance_tokens", "Sum of the ledger balances of the default asset by purpose (available, escrow, earnings, fees, world, ...); all purposes sum to zero.", []string{"purpose"}, nil)
	descLoop       = prometheus.NewDesc("gpumarket_loop_duration_seconds", "Time the leader's background steps took (spot clearing, billing, ...), in real time.", []string{"loop"}, nil)
	descScrapeErr  = prometheus.NewDesc("gpumarket_gauges_error", "1 when the last scrape could not read the totals from the store.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c coordCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMachines, descGPUs, descGPUsRented, descInstances, descLedger, descLoop, descScrapeErr} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c coordCollector) Collect(ch chan<- prometheus.Metric) {
	for name, st := range c.svc.LoopStats() {
		ch <- prometheus.MustNewConstSummary(descLoop, uint64(st.Count), st.Seconds, nil, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), gaugeTimeout)
	defer cancel()
	g, err := c.svc.Gauges(ctx)
	if err != nil {
		c.log.Warn("read totals for the metrics", "err", err)
		ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 0)
	for _, st := range []market.MachineStatus{market.MachineListed, market.MachineUnlisted, market.MachineUnverified, market.MachineOffline} {
		ch <- prometheus.MustNewConstMetric(descMachines, prometheus.GaugeValue, float64(g.MachinesByStatus[st]), string(st))
	}
	ch <- prometheus.MustNewConstMetric(descGPUs, prometheus.GaugeValue, float64(g.GPUs))
	ch <- prometheus.MustNewConstMetric(descGPUsRented, prometheus.GaugeValue, float64(g.GPUsRented))
	for _, st := range []market.InstanceState{market.InstancePending, market.InstanceStarting, market.InstanceRunning, market.InstanceStopping} {
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(g.InstancesByState[st]), string(st))
	}
	for purpose, m := range g.LedgerTotals {
		// Gauges are floats; for exact amounts use the ledger check.
		ch <- prometheus.MustNewConstMetric(descLedger, prometheus.GaugeValue, float64(m)/float64(market.Tokens(1)), purpose)
	}
}

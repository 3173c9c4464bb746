package market

import "time"

// MetricPoint is one GPU's metrics over one step of a series: the mean of
// the samples that fell into the step starting at At.
type MetricPoint struct {
	At         time.Time `json:"at"`
	UtilPct    float64   `json:"util_pct"`
	MemUsedMiB float64   `json:"mem_used_mib"`
	PowerW     float64   `json:"power_w"`
	TempC      float64   `json:"temp_c"`
}

// GPUSeries is the recent history of one GPU, oldest point first.
type GPUSeries struct {
	Index  int           `json:"index"`
	UUID   string        `json:"uuid,omitempty"`
	Points []MetricPoint `json:"points"`
}

// MetricsReport answers a metrics query for a machine or an instance: the
// latest reading of each GPU and each GPU's series over the window, at the
// finest step the coordinator keeps for that window.
type MetricsReport struct {
	Machine     MachineID   `json:"machine"`
	Instance    InstanceID  `json:"instance,omitempty"`
	From        time.Time   `json:"from"`
	To          time.Time   `json:"to"`
	StepSeconds int         `json:"step_seconds"`
	Latest      []GPUSample `json:"latest"`
	GPUs        []GPUSeries `json:"gpus"`
}

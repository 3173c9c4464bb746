package match

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// FieldID names a queryable offer field. The order is the order of the
// field table; it is also the column order of the index.
type FieldID uint8

// Queryable fields.
const (
	FGPUName FieldID = iota
	FNumGPUs
	FGPURAM
	FTotalGPURAM
	FCPUCores
	FRAM
	FDisk
	FPricePerGPUHour
	FTotalPricePerHour
	FSpotReserve
	FReliability
	FVerified
	FRegion
	FDatacenter
	FCUDAVersion
	FDriverVersion
	FPCIeBandwidth
	FRunner
	FPerfScore
	FBond
	numFields
)

// Type says how a field's values are written and compared.
type Type uint8

// Field types.
const (
	TypeNumber  Type = iota // decimal with optional unit, stored as an integer of the base unit
	TypeMoney               // tokens, exact to a micro-token
	TypeText                // compared with = != in notin only
	TypeBool                // true or false
	TypeVersion             // dotted version such as 12.4 or 550.54.15
)

func (t Type) String() string {
	return [...]string{"number", "money", "text", "bool", "version"}[t]
}

// Field documents one queryable field. The same table parses queries and
// feeds `offer search --help` and the API description.
type Field struct {
	ID      FieldID  `json:"-"`
	Name    string   `json:"name"`
	Aliases []string `json:"aliases,omitempty"` // other accepted names, mostly Vast's
	Type    Type     `json:"type"`
	Unit    string   `json:"unit,omitempty"` // what a bare number means
	Doc     string   `json:"doc"`
	// Backed is false for fields that market.Machine does not carry: the
	// coordinator works them out from the machine's history, checks and
	// bond (Facts, Index.SetFacts), and they read as zero until it has.
	Backed bool `json:"backed"`
	// base is the stored integer unit; units maps accepted suffixes
	// (lower case, "" = bare number) to multiples of it.
	base     string
	units    map[string]int64
	unitHelp string
}

// Sizes: a GB in queries is 1000 MiB, so that cards sold as "24 GB" (an
// RTX 4090 reports 24564 MiB) match gpu_ram>=24. GiB is exact.
var sizeUnits = map[string]int64{"": 1000, "g": 1000, "gb": 1000, "gib": 1024, "m": 1, "mb": 1, "mib": 1, "t": 1_000_000, "tb": 1_000_000, "tib": 1 << 20}

// fieldTable is read-only after package initialisation.
var fieldTable = [numFields]Field{
	{FGPUName, "gpu_name", []string{"gpu", "model"}, TypeText, "", "GPU model; case, spaces, _ and - and the \"NVIDIA GeForce \" prefix are ignored: RTX_4090 = \"NVIDIA GeForce RTX 4090\"", true, "", nil, ""},
	{FNumGPUs, "num_gpus", []string{"gpus"}, TypeNumber, "GPUs", "free GPUs on the machine", true, "GPU", map[string]int64{"": 1}, ""},
	{FGPURAM, "gpu_ram", []string{"vram"}, TypeNumber, "GB", "memory per GPU (smallest card); units MB GB GiB TB, 1 GB = 1000 MiB", true, "MiB", sizeUnits, "MB, GB, GiB, TB"},
	{FTotalGPURAM, "total_gpu_ram", []string{"gpu_total_ram"}, TypeNumber, "GB", "GPU memory summed over the free GPUs", true, "MiB", sizeUnits, "MB, GB, GiB, TB"},
	{FCPUCores, "cpu_cores", []string{"cpus"}, TypeNumber, "cores", "CPU cores of the machine", true, "core", map[string]int64{"": 1}, ""},
	{FRAM, "ram", []string{"cpu_ram"}, TypeNumber, "GB", "system memory", true, "MiB", sizeUnits, "MB, GB, GiB, TB"},
	{FDisk, "disk", []string{"disk_space"}, TypeNumber, "GB", "disk space", true, "MiB", sizeUnits, "MB, GB, GiB, TB"},
	{FPricePerGPUHour, "price_per_gpu_hour", []string{"price", "dph_gpu"}, TypeMoney, "tokens/GPU-hour", "on-demand price of one GPU for one hour", true, "micro-token", map[string]int64{"": 1_000_000}, ""},
	{FTotalPricePerHour, "total_price_per_hour", []string{"dph", "dph_total"}, TypeMoney, "tokens/hour", "price of all free GPUs for one hour", true, "micro-token", map[string]int64{"": 1_000_000}, ""},
	{FSpotReserve, "spot_reserve", []string{"min_bid"}, TypeMoney, "tokens/GPU-day", "host's reserve price for spot bids: the lowest bid per GPU-day it accepts", true, "micro-token", map[string]int64{"": 1_000_000}, ""},
	{FReliability, "reliability", []string{"reliability2"}, TypeNumber, "fraction 0..1", "heartbeat coverage over 30 days counting host faults; 0.95 or 95%", false, "ppm", map[string]int64{"": 1_000_000, "%": 10_000}, "%"},
	{FVerified, "verified", nil, TypeBool, "true/false", "machine passed verification", false, "", nil, ""},
	{FRegion, "region", []string{"geolocation"}, TypeText, "", "region; a value also matches its sub-regions: eu matches eu-west-1", true, "", nil, ""},
	{FDatacenter, "datacenter", []string{"dc"}, TypeText, "", "data center name", true, "", nil, ""},
	{FCUDAVersion, "cuda_version", []string{"cuda_vers", "cuda"}, TypeVersion, "version", "highest CUDA version the driver supports, like 12.4", true, "", nil, ""},
	{FDriverVersion, "driver_version", []string{"driver"}, TypeVersion, "version", "NVIDIA driver version, like 550.54.15", true, "", nil, ""},
	{FPCIeBandwidth, "pcie_bandwidth", []string{"pcie_bw"}, TypeNumber, "GB/s", "host-to-GPU PCIe link bandwidth of the slowest GPU, from the link generation and width its driver reports (Gen4 x16: 31.5 GB/s)", true, "MB/s", map[string]int64{"": 1000, "gb/s": 1000, "gbps": 1000, "mb/s": 1}, "GB/s, MB/s"},
	{FRunner, "runner", nil, TypeText, "", "how work runs: docker or process", true, "", nil, ""},
	{FPerfScore, "perf_score", []string{"dlperf"}, TypeNumber, "points", "compute measured by the newest passed check: trillions of 32-bit multiply-adds per second per GPU, from the challenge's issue to the agent's commitment (an RTX 4090 measures up to about 20)", false, "milli-point", map[string]int64{"": 1000}, ""},
	{FBond, "bond_per_gpu", []string{"stake_per_gpu"}, TypeMoney, "tokens/GPU", "tokens the host bonded per GPU, paid to renters on failed checks and downtime", false, "micro-token", map[string]int64{"": 1_000_000}, ""},
}

// Fields returns the field table, in order.
func Fields() []Field { return slices.Clone(fieldTable[:]) }

// Name returns the field's query name.
func (f FieldID) String() string {
	if f < numFields {
		return fieldTable[f].Name
	}
	return fmt.Sprintf("field(%d)", f)
}

func lookupField(name string) (FieldID, bool) {
	name = strings.ToLower(name)
	for _, f := range fieldTable {
		if f.Name == name || slices.Contains(f.Aliases, name) {
			return f.ID, true
		}
	}
	return 0, false
}

// Facts are the facts about a machine that market.Machine does not hold:
// reliability from its history, verification's verdict and measured
// compute, and its bond. Their zero value means "not known".
type Facts struct {
	ReliabilityPPM int64 // parts per million of 30-day coverage
	Verified       bool
	PerfScoreMilli int64 // perf_score x 1000
	// BondPerGPU is the host's bond per GPU (docs/verification.md).
	BondPerGPU market.Money
}

// row is a machine's value of every field: numbers in the base unit, text
// normalised.
type row struct {
	num [numFields]int64
	str [numFields]string
}

func rowOf(m market.Machine, f Facts) row {
	var r row
	free := m.FreeGPUs()
	var minVRAM, freeVRAM int64
	for i, g := range m.GPUs {
		if i == 0 || g.VRAMMiB < minVRAM {
			minVRAM = g.VRAMMiB
		}
		if !slices.Contains(m.UsedGPUs, g.Index) {
			freeVRAM += g.VRAMMiB
		}
	}
	r.str[FGPUName] = NormModel(gpuModels(m.GPUs))
	r.num[FNumGPUs] = int64(len(free))
	r.num[FGPURAM] = minVRAM
	r.num[FTotalGPURAM] = freeVRAM
	r.num[FCPUCores] = int64(m.CPUCores)
	r.num[FRAM] = m.RAMMiB
	r.num[FDisk] = m.DiskGiB * 1024
	r.num[FPricePerGPUHour] = int64(m.PricePerGPUHour)
	r.num[FTotalPricePerHour] = int64(m.PricePerGPUHour) * int64(len(free))
	r.num[FSpotReserve] = int64(m.Spot.ReservePerGPUDay)
	r.num[FReliability] = f.ReliabilityPPM
	if f.Verified {
		r.num[FVerified] = 1
	}
	r.str[FRegion] = normText(m.Region)
	r.str[FDatacenter] = normText(m.DataCenter)
	r.num[FCUDAVersion], _ = parseVersion(m.CUDAVersion)
	r.num[FDriverVersion], _ = parseVersion(m.DriverVersion)
	r.num[FPCIeBandwidth] = pcieMBps(m.GPUs)
	r.str[FRunner] = normText(m.Runner)
	r.num[FPerfScore] = f.PerfScoreMilli
	r.num[FBond] = int64(f.BondPerGPU)
	return r
}

// pcieLaneMBps is the bandwidth of one PCIe lane, in MB/s after line
// encoding, by generation (1 to 6).
var pcieLaneMBps = [...]int64{0, 250, 500, 985, 1969, 3938, 7563}

// pcieMBps is the host-to-GPU link bandwidth of the slowest of gpus, from
// the link generation and width their drivers report (nvidia-smi's
// pcie.link.gen.max and .width.max: what the GPU and the slot allow
// together), in MB/s; 0 when no GPU reports them.
func pcieMBps(gpus []market.GPU) int64 {
	var slowest int64
	for _, g := range gpus {
		if g.PCIeGen <= 0 || g.PCIeGen >= len(pcieLaneMBps) || g.PCIeWidth <= 0 {
			continue
		}
		if bw := pcieLaneMBps[g.PCIeGen] * int64(g.PCIeWidth); slowest == 0 || bw < slowest {
			slowest = bw
		}
	}
	return slowest
}

// NormModel lets "rtx_4090", "RTX 4090" and "NVIDIA GeForce RTX 4090"
// compare equal: lower case, no spaces, _ or -, no vendor prefix.
func NormModel(s string) string {
	s = normalize(s)
	s = strings.TrimPrefix(s, "nvidia")
	return strings.TrimPrefix(s, "geforce")
}

func normText(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// textMatch reports whether a machine's normalised value v matches the
// normalised query value p of field f. The index and Query.Match both use it.
func textMatch(f FieldID, p, v string) bool {
	if f == FRegion {
		return v == p || (strings.HasPrefix(v, p) && len(v) > len(p) && v[len(p)] == '-')
	}
	return v == p
}

// parseVersion encodes "major.minor.patch" so that integer order is version
// order. Missing parts are zero.
func parseVersion(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 3 {
		return 0, false
	}
	var v int64
	for i := range 3 {
		var n int64
		if i < len(parts) {
			p := parts[i]
			if p == "" || len(p) > 6 {
				return 0, false
			}
			for _, c := range p {
				if c < '0' || c > '9' {
					return 0, false
				}
				n = n*10 + int64(c-'0')
			}
			if n >= 1<<20 {
				return 0, false
			}
		}
		v = v<<20 | n
	}
	return v, true
}

// MarshalText writes a Type by name in JSON.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

package match

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

// show renders filters compactly for golden comparisons.
func show(q Query) []string {
	var out []string
	for _, f := range q.Filters {
		v := fmt.Sprint(f.Nums)
		if fieldTable[f.Field].Type == TypeText {
			v = fmt.Sprint(f.Strs)
		}
		out = append(out, fmt.Sprintf("%s %s %s @%d", f.Field, f.Op, v, f.Pos))
	}
	return out
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"gpu_name=RTX_4090 num_gpus>=2 gpu_ram>=24 price_per_gpu_hour<0.8 reliability>0.95 region in [eu,us] verified=true", []string{
			"gpu_name = [rtx4090] @1", "num_gpus >= [2] @19", "gpu_ram >= [24000] @31", "price_per_gpu_hour < [800000] @43",
			"reliability > [950000] @66", "region in [eu us] @83", "verified = [1] @101"}},
		{`gpu_name="NVIDIA GeForce RTX 4090"`, []string{"gpu_name = [rtx4090] @1"}},
		{`gpu_name = 'rtx-4090'`, []string{"gpu_name = [rtx4090] @1"}},
		{"gpu_ram>=24GB gpu_ram>=24GiB gpu_ram<1.5TB ram>=64G disk>=500", []string{
			"gpu_ram >= [24000] @1", "gpu_ram >= [24576] @15", "gpu_ram < [1500000] @30", "ram >= [64000] @44", "disk >= [500000] @53"}},
		{"reliability>=95% reliability>=0.999999", []string{"reliability >= [950000] @1", "reliability >= [999999] @18"}},
		{"price<=1.000001 dph<3", []string{"price_per_gpu_hour <= [1000001] @1", "total_price_per_hour < [3000000] @17"}},
		{"cuda_version>=12.4 driver_version=550.54.15", []string{"cuda_version >= [13194143727616] @1", "driver_version = [604731451899919] @20"}},
		{"region notin [ap, 'sa-east'] runner!=Docker", []string{"region notin [ap sa-east] @1", "runner != [docker] @30"}},
		{"region not in [eu] num_gpus in [1, 2,4]", []string{"region notin [eu] @1", "num_gpus in [1 2 4] @20"}},
		{"pcie_bw>=1000MB/s pcie_bandwidth>12.5 perf_score>=10.5 spot_reserve<0.1", []string{
			"pcie_bandwidth >= [1000] @1", "pcie_bandwidth > [12500] @19", "perf_score >= [10500] @39", "spot_reserve < [100000] @56"}},
		{"VERIFIED=false region=É", []string{"verified = [0] @1", "region = [é] @16"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			q, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, show(q)); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			if got := q.String(); got != strings.Join(strings.Fields(tc.in), " ") && len(q.Filters) > 0 && !strings.Contains(tc.in, "  ") && !strings.Contains(tc.in, ", ") && !strings.Contains(tc.in, " = ") {
				t.Errorf("String() = %q, want the filters as written", got)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"gpu_mem>=24", "unknown field 'gpu_mem' at 1; did you mean 'gpu_ram'?"},
		{"num_gpus>=1 inet_down>=1Gbps", "unknown field 'inet_down' (gpumarket does not measure hosts' internet bandwidth) at 13; leave it out of the query"},
		{"num_gpus>=2 gpu_ram>=x", "'>=' needs a number at 22"},
		{"gpu_ram>= ", "'>=' needs a number at 11"},
		{"num_gpus>=2 reliabilty>0.9", "unknown field 'reliabilty' at 13; did you mean 'reliability'?"},
		{"gpu_name=RTX 4090", `unknown field '4090' at 14; quote values that contain spaces, like gpu_name="RTX 4090"; see the field list in --help`},
		{"region=eu,us", "unexpected ',' at 10; for several values write region in [a,b]"},
		{"region<eu", "'<' does not apply to text field 'region' at 7; use =, !=, in or notin"},
		{"verified>=1", "'>=' does not apply to true/false field 'verified' at 9; use = or !="},
		{"gpu_ram>=24XB", "unknown unit 'XB' for gpu_ram at 10; use MB, GB, GiB, TB or a plain number (GB)"},
		{"num_gpus>=2GB", "unknown unit 'GB' for num_gpus at 11; num_gpus takes plain numbers (GPUs)"},
		{"price<0.0000001", "'0.0000001' is more precise than price_per_gpu_hour allows at 7; the smallest step is 1 micro-token"},
		{"price<99999999999999999999", "'99999999999999999999' is too large at 7"},
		{"region in eu", "'in' needs a list like [eu,us] at 11"},
		{"region in []", "'in' needs at least one value at 12"},
		{"region in [eu", "unterminated list at 11; close it with ]"},
		{"region in [eu us]", "unexpected 'u' in list at 15; separate values with commas: [eu,us]"},
		{"region=[eu]", "'=' takes one value, not a list at 8; use in or notin for a list"},
		{`gpu_name="RTX 4090`, `unterminated string at 10; close it with "`},
		{"num_gpus=>2", "unexpected '>' after '=' at 10; operators are = != < <= > >= in notin"},
		{"verified=maybe", "'=' needs true or false at 10"},
		{"cuda_version>=12.x", "'>=' needs a version like 12.4 at 15"},
		{"=2", "expected a field name, found '=' at 1; filters look like num_gpus>=2"},
		{"num_gpus", "expected an operator after 'num_gpus' at 9; operators are = != < <= > >= in notin"},
		{"num_gpus~2", "unknown field 'num_gpus~2' at 1; did you mean 'num_gpus'?"},
		{"num_gpus ~2", "expected an operator after 'num_gpus' at 10; operators are = != < <= > >= in notin"},
		{"région=1", "unknown field 'région' at 1; did you mean 'region'?"},
		{"region=é x=1", "unknown field 'x' at 10; quote values that contain spaces, like gpu_name=\"RTX 4090\"; see the field list in --help"},
		{"num_gpus>=2]", "unexpected ']' at 12"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := Parse(tc.in)
			if !market.IsKind(err, market.Invalid) {
				t.Fatalf("Parse err = %v, want kind invalid", err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse err = %T, want a *ParseError inside", err)
			}
			if got := market.Message(err); got != tc.want {
				t.Errorf("Parse error\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestFieldTable(t *testing.T) {
	seen := map[string]bool{}
	for i, f := range Fields() {
		if f.ID != FieldID(i) {
			t.Errorf("field %s has ID %d at position %d", f.Name, f.ID, i)
		}
		for _, n := range append([]string{f.Name}, f.Aliases...) {
			if seen[n] {
				t.Errorf("name %q used twice", n)
			}
			seen[n] = true
		}
		if (f.Type == TypeNumber || f.Type == TypeMoney) && f.units[""] == 0 {
			t.Errorf("field %s has no bare-number unit", f.Name)
		}
		if f.Doc == "" {
			t.Errorf("field %s is undocumented", f.Name)
		}
	}
}

// richMachine is a machine with every backed field set.
func richMachine() (market.Machine, Facts) {
	m := machine("m-1", 4, "NVIDIA GeForce RTX 4090", 700_000, 3)
	m.CPUCores, m.RAMMiB, m.DiskGiB = 32, 128_000, 1000
	m.Region, m.DataCenter = "eu-west-1", "FRA1"
	m.CUDAVersion, m.DriverVersion, m.Runner = "12.4", "550.54.15", "docker"
	for g := range m.GPUs {
		m.GPUs[g].PCIeGen, m.GPUs[g].PCIeWidth = 4, 16
	}
	m.GPUs[2].PCIeWidth = 8 // the slowest: 15.75 GB/s
	m.Spot.ReservePerGPUDay = 2_500_000
	return m, Facts{ReliabilityPPM: 980_000, Verified: true, PerfScoreMilli: 42_500, BondPerGPU: 10_000_000}
}

func TestMatch(t *testing.T) {
	m, fs := richMachine()
	for _, tc := range []struct {
		q    string
		want bool
	}{
		{"", true},
		{"gpu_name=RTX_4090", true},
		{"gpu_name=rtx4090 gpu_name='NVIDIA GeForce RTX 4090' gpu_name=GeForce-RTX-4090", true},
		{"gpu_name=4090", false},
		{"gpu_name=RTX_4090D", false},
		{`gpu_name in [A100, "rtx 4090"]`, true},
		{"gpu_name notin [A100]", true},
		{"num_gpus=3 num_gpus>=3 num_gpus<4 num_gpus in [3]", true},
		{"num_gpus>=4", false},
		{"gpu_ram>=24 gpu_ram>=24GB gpu_ram<24GiB", true},
		{"gpu_ram>=25", false},
		{"total_gpu_ram>=73GB total_gpu_ram<74GB", true},
		{"cpu_cores>=32 ram>=128 disk>=1TB disk>=1000GiB", true},
		{"price_per_gpu_hour<=0.7 price_per_gpu_hour>0.699999", true},
		{"price_per_gpu_hour<0.7", false},
		{"total_price_per_hour=2.1", true},
		{"reliability>0.95 reliability>=98% reliability<=0.98", true},
		{"reliability>0.98", false},
		{"verified=true verified!=false", true},
		{"region=eu region=eu-west region=eu-west-1 region in [us, EU]", true},
		{"region=eu-w", false},
		{"region notin [eu]", false},
		{"datacenter=fra1 runner=docker runner!=process", true},
		{"cuda_version>=12 cuda_version>=12.4 cuda_version<12.4.1 cuda_version<12.10", true},
		{"driver_version>=550 driver_version<550.100", true},
		{"perf_score>42 perf_score<=42.5", true},
		{"spot_reserve=2.5 spot_reserve<3 min_bid>2", true},
		{"spot_reserve<2.5", false},
		{"pcie_bandwidth=15.752 pcie_bw>=15GB/s pcie_bandwidth<16", true},
		{"pcie_bandwidth>=16", false},
		{"bond_per_gpu>=10 stake_per_gpu<=10", true},
	} {
		t.Run(tc.q, func(t *testing.T) {
			q, err := Parse(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := q.Match(m, fs); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
			ix := NewIndex()
			ix.Upsert(m)
			ix.SetFacts(m.ID, fs)
			if got := len(ix.Search(q, Sort{}, 0)) == 1; got != tc.want {
				t.Errorf("Index.Search found it = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseSort(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Sort
		wantErr string
	}{
		{"", Sort{}, ""},
		{"score", Sort{}, ""},
		{"price", Sort{ByField: true, Field: FPricePerGPUHour}, ""},
		{"-reliability", Sort{ByField: true, Field: FReliability, Desc: true}, ""},
		{"region", Sort{}, "cannot sort by 'region'; use score, price or a numeric field, with - for largest first"},
		{"-relability", Sort{}, "cannot sort by 'relability'; did you mean 'reliability'?; use score, price or a numeric field, with - for largest first"},
	} {
		got, err := ParseSort(tc.in)
		if tc.wantErr != "" {
			if market.Message(err) != tc.wantErr || !market.IsKind(err, market.Invalid) {
				t.Errorf("ParseSort(%q) err = %v, want %s", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSort(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"gpu_name=RTX_4090 num_gpus>=2 gpu_ram>=24 price_per_gpu_hour<0.8 reliability>0.95 region in [eu,us] verified=true",
		`gpu_name="RTX 4090" region notin ['a', b]`, "gpu_ram>=24GiB cuda_version>=12.4", "reliability>=95%",
		"region in [", `gpu_name="`, "price<0.0000001", "num_gpus=>2", "région=é", "\xff=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if n := utf8.RuneCountInString(s); pe.Pos < 1 || pe.Pos > n+1 {
				t.Fatalf("error position %d outside 1..%d: %v", pe.Pos, n+1, err)
			}
			return
		}
		// A parsed query parses again to the same filters.
		q2, err := Parse(q.String())
		if err != nil {
			t.Fatalf("reparse of %q: %v", q.String(), err)
		}
		if len(q2.Filters) != len(q.Filters) {
			t.Fatalf("reparse of %q gave %d filters, want %d", q.String(), len(q2.Filters), len(q.Filters))
		}
		m, fs := richMachine()
		_ = q.Match(m, fs)
	})
}

package nvidiasmi

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gpumarket/gpumarket/internal/market"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

type golden struct {
	Driver string       `json:"driver"`
	GPUs   []market.GPU `json:"gpus"`
}

func TestParseGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.csv")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.csv: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".csv")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			gpus, driver, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got, err := json.MarshalIndent(golden{driver, gpus}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("Parse(%s) differs from %s (-want +got):\n%s", in, path, diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
		kind           market.Kind
	}{
		{"empty", "", "found no GPUs", market.NotFound},
		{"no devices", "No devices were found\n", "found no GPUs", market.NotFound},
		{"short line", "0, GPU-x, NVIDIA L40S, 46068\n", "line 1: got 4 fields, want 11", market.Invalid},
		{"no mig field", "0, GPU-x, NVIDIA L40S, 46068, 100, 350, 350, 4, 16, 550\n", "line 1: got 10 fields, want 11", market.Invalid},
		{"no uuid", "0, [N/A], NVIDIA L40S, 46068, 100, 350, 350, 4, 16, 550, [N/A]\n", "GPU 0 has no UUID", market.Invalid},
		{"bad memory", "0, GPU-x, NVIDIA L40S, 46 GB, 100, 350, 350, 4, 16, 550, [N/A]\n", `memory.total "46 GB" is not a whole number`, market.Invalid},
		{"memory n/a", "0, GPU-x, NVIDIA L40S, [N/A], 100, 350, 350, 4, 16, 550, [N/A]\n", "memory.total is [N/A], want a number", market.Invalid},
		{"bad watts", "0, GPU-x, NVIDIA L40S, 46068, lots, 350, 350, 4, 16, 550, [N/A]\n", `power.min_limit "lots" is not a number of watts`, market.Invalid},
		{"bad mig mode", "0, GPU-x, NVIDIA A100, 81920, 100, 400, 400, 4, 16, 550, Pending\n", `mig.mode.current "Pending" is neither Enabled nor Disabled`, market.Invalid},
		{"error text", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "line 1: got 1 fields, want 11 (is \"NVIDIA-SMI has failed", market.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.want)
			}
			if k := market.KindOf(err); k != tt.kind {
				t.Errorf("kind = %v, want %v", k, tt.kind)
			}
		})
	}
}

func TestParseCUDAVersion(t *testing.T) {
	raw, err := os.ReadFile("testdata/header-h100.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ in, want string }{
		{string(raw), "12.4"},
		{"CUDA Version: 12.2.1 ", "12.2.1"},
		{"CUDA Version: N/A", ""},
		{"", ""},
	} {
		if got := ParseCUDAVersion([]byte(tt.in)); got != tt.want {
			t.Errorf("ParseCUDAVersion(%.40q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDiscover(t *testing.T) {
	csv, _ := os.ReadFile("testdata/rtx4090-1x.csv")
	header, _ := os.ReadFile("testdata/header-h100.txt")
	ok := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		if name != Binary {
			return nil, fmt.Errorf("unexpected command %q", name)
		}
		if len(args) == 0 {
			return header, nil
		}
		if diff := cmp.Diff(QueryArgs, args); diff != "" {
			return nil, fmt.Errorf("args (-want +got):\n%s", diff)
		}
		return csv, nil
	}
	info, err := Discover(t.Context(), ok)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.GPUs) != 1 || info.DriverVersion != "560.35.03" || info.CUDAVersion != "12.4" {
		t.Errorf("Discover = %+v, want 1 GPU, driver 560.35.03, CUDA 12.4", info)
	}

	absent := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		return nil, &exec.Error{Name: name, Err: exec.ErrNotFound}
	}
	if _, err := Discover(t.Context(), absent); !errors.Is(err, ErrNotFound) {
		t.Errorf("Discover with no binary: error = %v, want ErrNotFound", err)
	}
	broken := func(ctx context.Context, name string, args ...string) ([]byte, error) {
		return nil, errors.New("exit status 9")
	}
	if _, err := Discover(t.Context(), broken); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Discover with a failing binary: error = %v, want an error that is not ErrNotFound", err)
	}
}

func TestExecNotFound(t *testing.T) {
	_, err := Exec(t.Context(), "gpumarket-no-such-binary-nvidia-smi")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Exec(missing binary) error = %v, want ErrNotFound", err)
	}
	if _, err := Discover(t.Context(), func(ctx context.Context, _ string, args ...string) ([]byte, error) {
		return Exec(ctx, "gpumarket-no-such-binary-nvidia-smi", args...)
	}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Discover(missing binary) error = %v, want ErrNotFound", err)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.csv")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		gpus, _, err := Parse(b)
		if err == nil && len(gpus) == 0 {
			t.Errorf("Parse(%q) returned no GPUs and no error", b)
		}
	})
}

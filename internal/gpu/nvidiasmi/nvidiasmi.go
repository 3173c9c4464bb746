// Package nvidiasmi discovers NVIDIA GPUs by running nvidia-smi and parsing
// its CSV output. It is the fallback when NVML is not available.
//
// It imports only internal/market.
package nvidiasmi

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// ErrNotFound says that nvidia-smi is not installed. Callers fall back to
// another discovery method (fake GPUs in development) when errors.Is(err,
// ErrNotFound).
var ErrNotFound = errors.New("nvidia-smi not found")

// Binary is the command Discover runs.
const Binary = "nvidia-smi"

// QueryArgs are the arguments whose output Parse reads.
var QueryArgs = []string{
	"--query-gpu=index,uuid,name,memory.total,power.min_limit,power.default_limit,power.max_limit,pcie.link.gen.max,pcie.link.width.max,driver_version,mig.mode.current",
	"--format=csv,noheader,nounits",
}

const numFields = 11

// ExecFunc runs a command and returns its standard output. It must return an
// error that wraps exec.ErrNotFound or ErrNotFound when the binary is absent.
type ExecFunc func(ctx context.Context, name string, args ...string) ([]byte, error)

// Exec is the ExecFunc that runs real commands.
func Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("run %s: %w", name, ErrNotFound)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(string(out))
		}
		if msg != "" {
			return nil, fmt.Errorf("run %s: %s: %w", name, msg, err)
		}
		return nil, fmt.Errorf("run %s: %w", name, err)
	}
	return out, nil
}

// Info is what Discover finds.
type Info struct {
	GPUs          []market.GPU
	DriverVersion string
	CUDAVersion   string // "" when the header could not be read
}

// Discover runs nvidia-smi through run and parses its output. The CUDA
// version comes from a second, plain nvidia-smi run; failing to read it is
// not an error.
func Discover(ctx context.Context, run ExecFunc) (Info, error) {
	out, err := run(ctx, Binary, QueryArgs...)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) && !errors.Is(err, ErrNotFound) {
			return Info{}, fmt.Errorf("discover gpus: %w: %w", ErrNotFound, err)
		}
		return Info{}, fmt.Errorf("discover gpus: %w", err)
	}
	gpus, driver, err := Parse(out)
	if err != nil {
		return Info{}, fmt.Errorf("discover gpus: %w", err)
	}
	info := Info{GPUs: gpus, DriverVersion: driver}
	if header, err := run(ctx, Binary); err == nil {
		info.CUDAVersion = ParseCUDAVersion(header)
	}
	return info, nil
}

// Parse reads the output of nvidia-smi with QueryArgs. Fields reported as
// "[N/A]" or "[Not Supported]" become zero, except those a GPU cannot go
// without (index, UUID, name, memory), which are errors. Watts are rounded
// to the nearest integer. MIG mode is "Enabled" or "Disabled" on cards that
// have it and "[N/A]" (off) on the others. driver is the driver version of
// the first GPU.
func Parse(out []byte) (gpus []market.GPU, driver string, err error) {
	const op = "parse nvidia-smi output"
	text := strings.TrimSpace(string(out))
	if text == "" || strings.HasPrefix(text, "No devices were found") {
		return nil, "", market.Errorf(op, market.NotFound, "nvidia-smi found no GPUs")
	}
	r := csv.NewReader(strings.NewReader(text))
	r.TrimLeadingSpace = true
	r.LazyQuotes = true
	r.FieldsPerRecord = -1
	for line := 1; ; line++ {
		rec, rerr := r.Read()
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, "", market.Errorf(op, market.Invalid, "line %d: %v", line, rerr)
		}
		if len(rec) != numFields {
			return nil, "", market.Errorf(op, market.Invalid, "line %d: got %d fields, want %d (is %.80q the output of nvidia-smi %s?)",
				line, len(rec), numFields, strings.Join(rec, ","), strings.Join(QueryArgs, " "))
		}
		g, d, perr := parseRecord(rec)
		if perr != nil {
			return nil, "", market.Errorf(op, market.Invalid, "line %d: %v", line, perr)
		}
		if driver == "" {
			driver = d
		}
		gpus = append(gpus, g)
	}
	return gpus, driver, nil
}

func parseRecord(rec []string) (market.GPU, string, error) {
	f := make([]string, len(rec))
	for i, s := range rec {
		f[i] = strings.TrimSpace(s)
	}
	var g market.GPU
	var err error
	if g.Index, err = requiredInt("index", f[0]); err != nil {
		return g, "", err
	}
	if g.UUID = f[1]; missing(g.UUID) {
		return g, "", fmt.Errorf("GPU %d has no UUID", g.Index)
	}
	if g.Model = f[2]; missing(g.Model) {
		return g, "", fmt.Errorf("GPU %d has no name", g.Index)
	}
	mem, err := requiredInt("memory.total", f[3])
	if err != nil {
		return g, "", err
	}
	g.VRAMMiB = int64(mem)
	watts := []*int{&g.MinPowerW, &g.DefaultPowerW, &g.MaxPowerW}
	for i, name := range []string{"power.min_limit", "power.default_limit", "power.max_limit"} {
		if *watts[i], err = optionalWatts(name, f[4+i]); err != nil {
			return g, "", err
		}
	}
	if g.PCIeGen, err = optionalInt("pcie.link.gen.max", f[7]); err != nil {
		return g, "", err
	}
	if g.PCIeWidth, err = optionalInt("pcie.link.width.max", f[8]); err != nil {
		return g, "", err
	}
	driver := f[9]
	if missing(driver) {
		driver = ""
	}
	switch mig := f[10]; {
	case strings.EqualFold(mig, "Enabled"):
		g.MIG = true
	case strings.EqualFold(mig, "Disabled"), missing(mig):
	default:
		return g, "", fmt.Errorf("mig.mode.current %q is neither Enabled nor Disabled", mig)
	}
	return g, driver, nil
}

// missing reports whether nvidia-smi left a field out: "[N/A]",
// "[Not Supported]", "[Unknown Error]" and the like.
func missing(s string) bool {
	return s == "" || strings.HasPrefix(s, "[") || strings.EqualFold(s, "N/A")
}

func requiredInt(name, s string) (int, error) {
	if missing(s) {
		return 0, fmt.Errorf("%s is %s, want a number", name, s)
	}
	return parseInt(name, s)
}

func optionalInt(name, s string) (int, error) {
	if missing(s) {
		return 0, nil
	}
	return parseInt(name, s)
}

func parseInt(name, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q is not a whole number", name, s)
	}
	return n, nil
}

func optionalWatts(name, s string) (int, error) {
	if missing(s) {
		return 0, nil
	}
	s = strings.TrimSpace(strings.TrimSuffix(s, "W"))
	w, err := strconv.ParseFloat(s, 64)
	if err != nil || w < 0 || w > 1e6 {
		return 0, fmt.Errorf("%s %q is not a number of watts", name, s)
	}
	return int(w + 0.5), nil
}

var cudaRE = regexp.MustCompile(`CUDA Version:\s*([0-9]+(?:\.[0-9]+)*)`)

// ParseCUDAVersion finds "CUDA Version: 12.4" in the header of plain
// nvidia-smi output and returns "12.4", or "" when it is not there.
func ParseCUDAVersion(out []byte) string {
	m := cudaRE.FindSubmatch(out)
	if m == nil {
		return ""
	}
	return string(m[1])
}

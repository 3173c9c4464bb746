package nvidiasmi

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// SampleArgs are the arguments whose output ParseSamples reads.
var SampleArgs = []string{
	"--query-gpu=index,uuid,utilization.gpu,memory.used,power.draw,temperature.gpu,clocks.sm,clocks.mem,power.limit",
	"--format=csv,noheader,nounits",
}

const sampleFields = 9

// Sample reads the current metrics of every GPU with nvidia-smi.
func (c Control) Sample(ctx context.Context) ([]market.GPUSample, error) {
	out, err := c.Exec(ctx, Binary, SampleArgs...)
	if err != nil {
		return nil, fmt.Errorf("read GPU metrics: %w", err)
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	return ParseSamples(out, now())
}

// ParseSamples reads the output of nvidia-smi with SampleArgs, taken at
// at. Readings a card does not support ("[N/A]", "[Not Supported]") are
// zero; the index and UUID are required.
func ParseSamples(out []byte, at time.Time) ([]market.GPUSample, error) {
	const op = "parse nvidia-smi metrics"
	text := strings.TrimSpace(string(out))
	if text == "" || strings.HasPrefix(text, "No devices were found") {
		return nil, market.Errorf(op, market.NotFound, "nvidia-smi found no GPUs")
	}
	r := csv.NewReader(strings.NewReader(text))
	r.TrimLeadingSpace = true
	r.FieldsPerRecord = -1
	var samples []market.GPUSample
	for line := 1; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, market.Errorf(op, market.Invalid, "line %d: %v", line, err)
		}
		if len(rec) != sampleFields {
			return nil, market.Errorf(op, market.Invalid, "line %d: got %d fields, want %d (is %.80q the output of nvidia-smi %s?)",
				line, len(rec), sampleFields, strings.Join(rec, ","), strings.Join(SampleArgs, " "))
		}
		s, err := parseSample(rec, at)
		if err != nil {
			return nil, market.Errorf(op, market.Invalid, "line %d: %v", line, err)
		}
		samples = append(samples, s)
	}
	return samples, nil
}

func parseSample(rec []string, at time.Time) (market.GPUSample, error) {
	f := make([]string, len(rec))
	for i, s := range rec {
		f[i] = strings.TrimSpace(s)
	}
	s := market.GPUSample{At: at}
	var err error
	if s.Index, err = requiredInt("index", f[0]); err != nil {
		return s, err
	}
	if s.UUID = f[1]; missing(s.UUID) {
		return s, fmt.Errorf("GPU %d has no UUID", s.Index)
	}
	floats := []struct {
		name string
		v    *float64
		s    string
	}{{"utilization.gpu", &s.UtilPct, f[2]}, {"power.draw", &s.PowerW, f[4]}, {"temperature.gpu", &s.TempC, f[5]}}
	for _, x := range floats {
		if *x.v, err = optionalFloat(x.name, x.s); err != nil {
			return s, err
		}
	}
	mem, err := optionalInt("memory.used", f[3])
	if err != nil {
		return s, err
	}
	s.MemUsedMiB = int64(mem)
	if s.CoreMHz, err = optionalInt("clocks.sm", f[6]); err != nil {
		return s, err
	}
	if s.MemMHz, err = optionalInt("clocks.mem", f[7]); err != nil {
		return s, err
	}
	if s.PowerLimitW, err = optionalWatts("power.limit", f[8]); err != nil {
		return s, err
	}
	if s.UtilPct > 100 {
		return s, fmt.Errorf("utilization.gpu %v is above 100", s.UtilPct)
	}
	return s, nil
}

func optionalFloat(name, s string) (float64, error) {
	if missing(s) {
		return 0, nil
	}
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSuffix(s, "%"), "W"))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v > 1e6 {
		return 0, fmt.Errorf("%s %q is not a number", name, s)
	}
	return v, nil
}

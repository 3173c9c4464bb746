package fake

import (
	"cmp"
	"context"
	"hash/fnv"
	"math"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// SetBusy marks GPUs as used by a running workload (busy) or idle; Sample
// makes up readings that follow it. Unknown UUIDs are ignored.
func (c *Control) SetBusy(uuids []string, busy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy == nil {
		c.busy = map[string]bool{}
	}
	for _, u := range uuids {
		if _, ok := c.gpus[u]; ok {
			c.busy[u] = busy
		}
	}
}

// Sample returns a plausible reading of every GPU, in index order: a busy
// GPU works near its power limit (85-99% utilised, most of its memory in
// use, hot, at boost clocks or its locked clocks), an idle one draws about
// a tenth of its default limit at idle clocks with no memory in use. The
// values wander a little from reading to reading, deterministically for a
// given time, so charts look alive and tests can bound them.
func (c *Control) Sample(_ context.Context) ([]market.GPUSample, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock()
	out := make([]market.GPUSample, 0, len(c.gpus))
	for _, g := range c.ordered() {
		s := c.settings[g.UUID]
		limit := s.PowerLimitW
		if limit == 0 {
			limit = g.DefaultPowerW
		}
		w := wobble(g.UUID, now) // in [0, 1)
		r := market.GPUSample{Index: g.Index, UUID: g.UUID, At: now, PowerLimitW: limit}
		if c.busy[g.UUID] {
			r.UtilPct = 85 + 14*w
			r.MemUsedMiB = g.VRAMMiB * int64(60+30*w) / 100
			r.PowerW = math.Round(float64(limit)*(0.82+0.17*w)*10) / 10
			r.TempC = math.Round(64 + 16*w)
			r.CoreMHz, r.MemMHz = 1755+int(200*w), memClock(g)
			if s.Clocks.CoreLockMHz > 0 {
				r.CoreMHz = s.Clocks.CoreLockMHz
			}
			if s.Clocks.MemLockMHz > 0 {
				r.MemMHz = s.Clocks.MemLockMHz
			}
		} else {
			r.MemUsedMiB = 1
			r.PowerW = math.Round(float64(g.DefaultPowerW)*(0.08+0.04*w)*10) / 10
			r.TempC = math.Round(31 + 6*w)
			r.CoreMHz, r.MemMHz = 210, 405
		}
		out = append(out, r)
	}
	return out, nil
}

// ordered returns the GPUs by index. c.mu is held.
func (c *Control) ordered() []market.GPU {
	out := make([]market.GPU, 0, len(c.gpus))
	for _, g := range c.gpus {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b market.GPU) int { return cmp.Compare(a.Index, b.Index) })
	return out
}

func (c *Control) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// memClock is a memory clock that looks like the card's: HBM runs slower
// than GDDR.
func memClock(g market.GPU) int {
	if g.VRAMMiB >= 40000 && g.PCIeGen >= 4 && g.DefaultPowerW >= 400 {
		return 1593 // HBM2e/HBM3
	}
	return 10501 // GDDR6X
}

// wobble is a number in [0, 1) that changes every few seconds and differs
// per GPU.
func wobble(uuid string, at time.Time) float64 {
	h := fnv.New64a()
	h.Write([]byte(uuid))
	var b [8]byte
	t := uint64(at.Unix() / 5)
	for i := range b {
		b[i] = byte(t >> (8 * i))
	}
	h.Write(b[:])
	return float64(h.Sum64()%1000) / 1000
}

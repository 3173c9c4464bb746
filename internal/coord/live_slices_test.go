package coord

import (
	"fmt"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestFlushBatchSlices(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	b := flushBatch{claim: map[market.MachineID]time.Time{}, release: map[market.MachineID]time.Time{}}
	for i := range 10 {
		id := market.MachineID(fmt.Sprintf("m-%02d", i))
		switch {
		case i < 4: // claimed
			b.claim[id] = at
		case i < 7: // claimed and released in one go
			b.claim[id], b.release[id] = at, at
		default: // released
			b.release[id] = at
		}
	}
	for _, n := range []int{1, 3, 4, 10, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			parts := b.slices(n)
			if want := (10 + n - 1) / n; len(parts) != want {
				t.Fatalf("%d parts, want %d", len(parts), want)
			}
			claims, releases := map[market.MachineID]int{}, map[market.MachineID]int{}
			for _, p := range parts {
				ids := map[market.MachineID]bool{}
				for id := range p.claim {
					ids[id] = true
					claims[id]++
				}
				for id := range p.release {
					ids[id] = true
					releases[id]++
					if _, both := b.claim[id]; both {
						if _, ok := p.claim[id]; !ok {
							t.Errorf("%s is claimed and released in one go but its claim is in another part", id)
						}
					}
				}
				if len(ids) > n {
					t.Errorf("a part has %d machines, want at most %d", len(ids), n)
				}
			}
			if len(claims) != len(b.claim) || len(releases) != len(b.release) {
				t.Errorf("parts hold %d claims and %d releases, want %d and %d", len(claims), len(releases), len(b.claim), len(b.release))
			}
			for id, k := range claims {
				if k != 1 {
					t.Errorf("%s claimed in %d parts", id, k)
				}
			}
			for id, k := range releases {
				if k != 1 {
					t.Errorf("%s released in %d parts", id, k)
				}
			}
		})
	}
	if parts := (flushBatch{}).slices(5); len(parts) != 0 {
		t.Errorf("an empty batch gave %d parts", len(parts))
	}
}

// A released machine stays known while it may only be late, and is
// dropped after four claim silences without a heartbeat; one heard again
// meanwhile is kept.
func TestLiveSetDropsLongReleased(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	const silence = 15 * time.Second
	l := newLiveSet()
	l.online("m-1", "a-1", at)
	l.online("m-2", "a-1", at)
	l.apply(l.take(at, silence, silence/2), nil, at) // both claimed
	now := at.Add(silence)
	b := l.take(now, silence, silence/2)
	if len(b.release) != 2 {
		t.Fatalf("released %v, want both", b.release)
	}
	l.apply(b, nil, now)
	for _, id := range []market.MachineID{"m-1", "m-2"} {
		if _, ok := l.lastSeen(id); !ok {
			t.Fatalf("%s forgotten at its release", id)
		}
	}
	if b := l.take(at.Add(4*silence-time.Second), silence, silence/2); len(b.drop)+len(b.claim)+len(b.release) != 0 {
		t.Fatalf("before four silences: %+v, want nothing", b)
	}
	now = at.Add(4 * silence)
	b = l.take(now, silence, silence/2)
	if len(b.drop) != 2 || len(b.claim)+len(b.release) != 0 {
		t.Fatalf("after four silences: %+v, want both dropped and nothing written", b)
	}
	l.beat("m-2", "a-1", now) // heard between take and drop
	l.drop(b.drop, now, silence)
	if _, ok := l.lastSeen("m-1"); ok {
		t.Error("m-1, silent for four claim silences, is still known")
	}
	if _, ok := l.lastSeen("m-2"); !ok {
		t.Error("m-2, heard again, was dropped")
	}
}

// With rechecks off, a flush confirms only the claims marked for it.
func TestLiveSetRecheckMarked(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	const silence = 15 * time.Second
	l := newLiveSet()
	l.online("m-1", "a-1", at)
	l.online("m-2", "a-1", at)
	l.apply(l.take(at, silence, 0), nil, at) // both claimed
	now := at.Add(10 * time.Second)
	l.beat("m-1", "a-1", now)
	l.beat("m-2", "a-1", now)
	if b := l.take(now, silence, 0); len(b.claim) != 0 {
		t.Fatalf("rechecks off: claims %v, want none", b.claim)
	}
	if b := l.take(now, silence, silence/2); len(b.claim) != 2 {
		t.Fatalf("rechecks every %s: claims %v, want both", silence/2, b.claim)
	}
	l.recheck("m-2", "m-unknown")
	b := l.take(now, silence, 0)
	if len(b.claim) != 1 || !b.claim["m-2"].Equal(now) {
		t.Fatalf("after marking m-2: claims %v, want m-2 seen %s", b.claim, now)
	}
	l.apply(b, []market.MachineID{"m-2"}, now) // the flush found it offline
	if _, ok := l.lastSeen("m-2"); ok {
		t.Error("m-2, found offline, is still known")
	}
}

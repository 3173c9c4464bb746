package verify

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Window is the span the reliability score looks back over.
const Window = 30 * 24 * time.Hour

// Formula is the published reliability formula, shown with the terms.
const Formula = "score = coverage x fault_factor; coverage = online_seconds / listed_seconds over the last 30 days (1 when never listed); fault_factor = 1 - host_faults / (completed + host_faults) (1 with no instances); renter faults never count"

// HistoryKind is one kind of thing that happened to a machine, as far as
// reliability cares.
type HistoryKind int

// History kinds.
const (
	Online   HistoryKind = iota + 1 // heartbeats arrive (registered, came back)
	Offline                         // silent past the lost deadline
	Listed                          // the host listed it
	Unlisted                        // the host took it off the market
	Ended                           // an instance reached its end; see Fault
	CheckPassed
	CheckFailed
)

// Fault says whose fault an instance's end was.
type Fault int

// Faults.
const (
	NoFault     Fault = iota // stopped by its renter, preempted, exited 0
	HostFault                // agent lost, machine offline, GPU error
	RenterFault              // bad image, non-zero exit, out of memory
)

// HistoryEvent is one entry of a machine's history.
type HistoryEvent struct {
	At    time.Time
	Kind  HistoryKind
	Fault Fault // for Ended
	// Count, for Ended and the check kinds, is how many such outcomes
	// this entry stands for (counted by the store); 0 means one.
	Count int
}

// Reliability computes a machine's score over the window ending at now
// from its history; created is when it registered (online, unlisted).
// Events may come in any order; those after now are ignored.
func Reliability(created time.Time, history []HistoryEvent, now time.Time, window time.Duration) market.Reliability {
	start := now.Add(-window)
	if created.After(start) {
		start = created
	}
	r := market.Reliability{WindowStart: start, WindowEnd: now, Formula: Formula}
	h := slices.Clone(history)
	slices.SortStableFunc(h, func(a, b HistoryEvent) int { return a.At.Compare(b.At) })
	online, listed := true, false
	var listedDur, onlineDur time.Duration
	last := created
	advance := func(to time.Time) {
		from := last
		if from.Before(start) {
			from = start
		}
		if to.After(from) && listed {
			listedDur += to.Sub(from)
			if online {
				onlineDur += to.Sub(from)
			}
		}
		if to.After(last) {
			last = to
		}
	}
	for _, e := range h {
		if e.At.After(now) {
			break
		}
		advance(e.At)
		inWindow := !e.At.Before(start)
		n := max(e.Count, 1)
		switch e.Kind {
		case Online:
			online = true
		case Offline:
			online = false
		case Listed:
			listed = true
		case Unlisted:
			listed = false
		case Ended:
			if !inWindow {
				break
			}
			switch e.Fault {
			case HostFault:
				r.HostFaults += n
			case RenterFault:
				r.RenterFaults += n
			default:
				r.Completed += n
			}
		case CheckPassed:
			if inWindow {
				r.ChecksPassed += n
			}
		case CheckFailed:
			if inWindow {
				r.ChecksFailed += n
			}
		}
	}
	advance(now)
	r.ListedSecs, r.OnlineSecs = int64(listedDur/time.Second), int64(onlineDur/time.Second)
	r.Coverage = 1
	if listedDur > 0 {
		r.Coverage = float64(onlineDur) / float64(listedDur)
	}
	r.FaultFactor = 1
	if n := r.Completed + r.HostFaults; n > 0 {
		r.FaultFactor = 1 - float64(r.HostFaults)/float64(n)
	}
	r.Score = r.Coverage * r.FaultFactor
	return r
}

// hostWords mark an agent's start failure as the host's: the GPU or its
// driver failed, not the renter's image or command.
var hostWords = []string{"gpu", "nvml", "xid", "driver", "cuda error", "device", "host lost contact", "agent lost", "machine offline"}

// renterWords mark a failure as the renter's even when a host word
// appears too ("out of memory" on a GPU is the renter's workload).
var renterWords = []string{"out of memory", "oom", "image", "pull", "exec format", "no such file", "exited with code", "permission denied"}

// ClassifyEnd says whose fault an instance's end was, from the type and
// message of the event that recorded it ("instance.failed", "failed: host
// lost contact"). The rules are deliberately simple and published: a
// failure is the host's only when it names the host side and nothing of
// the renter's.
func ClassifyEnd(eventType, message string) Fault {
	msg := strings.ToLower(message)
	switch eventType {
	case "instance.failed":
		if strings.Contains(msg, "host lost contact") {
			return HostFault
		}
		for _, w := range renterWords {
			if strings.Contains(msg, w) {
				return RenterFault
			}
		}
		for _, w := range hostWords {
			if strings.Contains(msg, w) {
				return HostFault
			}
		}
		return RenterFault
	case "instance.stopped":
		if strings.Contains(msg, "exited with code") && !strings.Contains(msg, "exited with code 0") {
			return RenterFault
		}
		return NoFault
	}
	return NoFault
}

// Describe renders the terms in one line, for logs and the CLI.
func Describe(r market.Reliability) string {
	return fmt.Sprintf("%.4f = coverage %.4f (%ds online of %ds listed) x fault factor %.4f (%d host faults, %d completed; %d renter faults not counted)",
		r.Score, r.Coverage, r.OnlineSecs, r.ListedSecs, r.FaultFactor, r.HostFaults, r.Completed, r.RenterFaults)
}

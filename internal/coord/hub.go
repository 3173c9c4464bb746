package coord

import (
	"context"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// hub wakes long polls. Each topic (a machine's desired state, an
// instance's logs) has a version that changes on every notify; a waiter
// returns as soon as the version differs from the one it knows.
type hub struct {
	mu     sync.Mutex
	base   int64
	topics map[string]*topic
}

type topic struct {
	version int64
	changed chan struct{}
}

func newHub(base int64) *hub { return &hub{base: base, topics: map[string]*topic{}} }

func (h *hub) get(key string) *topic {
	t := h.topics[key]
	if t == nil {
		// Versions start at the coordinator's boot time, so an agent that
		// knew a version of a previous coordinator process never mistakes
		// it for the current one.
		t = &topic{version: h.base, changed: make(chan struct{})}
		h.topics[key] = t
	}
	return t
}

// version returns the current version of key.
func (h *hub) version(key string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.get(key).version
}

// notify bumps key's version and wakes its waiters.
func (h *hub) notify(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.get(key)
	t.version++
	close(t.changed)
	t.changed = make(chan struct{})
}

// wait blocks until key's version differs from since, wait passes or ctx
// ends, and returns the version then.
func (h *hub) wait(ctx context.Context, key string, since int64, wait time.Duration) int64 {
	h.mu.Lock()
	t := h.get(key)
	v, ch := t.version, t.changed
	h.mu.Unlock()
	if v != since || wait <= 0 {
		return v
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	case <-ctx.Done():
	}
	return h.version(key)
}

// forget drops a topic nobody will wait on again.
func (h *hub) forget(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.topics, key)
}

func machineTopic(id market.MachineID) string { return "machine:" + string(id) }
func logTopic(id market.InstanceID) string    { return "logs:" + string(id) }

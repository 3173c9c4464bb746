package agent

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Health checks of deployment replicas. A replica whose assignment carries
// $GPUMARKET_HEALTH_CHECK is checked every healthEvery while it runs. An
// HTTP check ("PORT PATH") is a GET on the machine's PORT for plain
// processes, on the host port the runner published PORT/tcp at for
// containers. A command check is run inside the instance by the runner
// (docker exec, or a child process with the instance's environment),
// healthy when it exits 0 within its timeout. The latest result goes out
// with the agent's reports.

const (
	healthEvery   = 2 * time.Second
	healthTimeout = 2 * time.Second
)

// execer is a Runner that can run a command inside a running instance of
// a, returning its exit code; err says why it could not run it. ctx
// bounds the command: it is killed when ctx ends.
type execer interface {
	Exec(ctx context.Context, a market.Assignment, cmd []string) (int, error)
}

// prober runs health checks in the background. The zero value is ready;
// wait returns once no probe is in flight.
type prober struct {
	mu     sync.Mutex
	state  map[market.InstanceID]*probeState
	wg     sync.WaitGroup
	client *http.Client
}

type probeState struct {
	busy   bool
	last   time.Time
	result *bool
}

// result returns the latest health of instance as (assignment), starting
// a probe when one is due. It returns nil when the assignment has no
// check or none has finished yet.
func (p *prober) result(ctx context.Context, run Runner, as market.Assignment, obs market.InstanceReport, now time.Time) *bool {
	spec, ok := as.Env[market.HealthEnv]
	if !ok {
		return nil
	}
	h, err := market.ParseHealthCheck(spec)
	if err != nil {
		f := false
		return &f
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		p.state = map[market.InstanceID]*probeState{}
		p.client = &http.Client{Timeout: healthTimeout}
	}
	st := p.state[as.Instance]
	if st == nil {
		st = &probeState{}
		p.state[as.Instance] = st
	}
	if !st.busy && now.Sub(st.last) >= healthEvery {
		st.busy, st.last = true, now
		check := func() bool { return probe(ctx, p.client, healthURL(h, obs.Ports)) }
		if !h.HTTP() {
			check = func() bool { return execCheck(ctx, run, as, h) }
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			ok := check()
			p.mu.Lock()
			defer p.mu.Unlock()
			st.busy, st.result = false, &ok
		}()
	}
	if st.result == nil {
		return nil
	}
	v := *st.result
	return &v
}

// forget drops an instance's state.
func (p *prober) forget(id market.InstanceID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.state, id)
}

// wait returns when no probe is running.
func (p *prober) wait() { p.wg.Wait() }

// healthURL is where the check of h is made: the host port its container
// port was published at, else the port on this machine.
func healthURL(h market.HealthCheck, ports []market.PortBinding) string {
	port := h.Port
	for _, b := range ports {
		if b.Port == fmt.Sprintf("%d/tcp", h.Port) && b.HostPort > 0 {
			port = b.HostPort
		}
	}
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, h.Path)
}

func probe(ctx context.Context, c *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// execCheck runs h's command in the instance of as: healthy when it exits
// 0 within its timeout. A runner that cannot run commands in instances
// reports every replica unhealthy.
func execCheck(ctx context.Context, run Runner, as market.Assignment, h market.HealthCheck) bool {
	e, ok := run.(execer)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, h.CommandTimeout())
	defer cancel()
	code, err := e.Exec(ctx, as, h.Command)
	return err == nil && code == 0 && ctx.Err() == nil
}

// healthOf encodes a health result for comparison: unknown, false, true.
func healthOf(h *bool) int {
	switch {
	case h == nil:
		return 0
	case *h:
		return 2
	}
	return 1
}

package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/postgres/pgtest"
)

// gpumarketBinary builds the gpumarket binary into a temporary directory
// and returns its path, for tests that run real processes.
func gpumarketBinary(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "gpumarket")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gpumarket")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// replica is one `gpumarket serve` process of a test, restartable on its
// port with its failpoint file.
type replica struct {
	name     string
	bin      string
	args     []string
	url      string
	failfile string
	logPath  string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stalled chan struct{} // gets a value when the failpoint fires
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(r.bin, r.args...)
	cmd.Env = append(os.Environ(), failpointEnv+"="+r.failfile,
		"GPUMARKET_ADMIN_EMAIL=admin@example.com", "GPUMARKET_ADMIN_PASSWORD=admin-password-1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	listening := make(chan struct{}, 1)
	go func() {
		defer close(done)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			var rec struct{ Msg string }
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			switch {
			case rec.Msg == "coordinator listening":
				select {
				case listening <- struct{}{}:
				default:
				}
			case strings.HasPrefix(rec.Msg, "failpoint: stalling"):
				select {
				case r.stalled <- struct{}{}:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	select {
	case <-listening:
	case <-done:
		t.Fatalf("%s exited at start; its log:\n%s", r.name, r.tail())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start listening in 30 s; its log:\n%s", r.name, r.tail())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (r *replica) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (r *replica) stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

func (r *replica) tail() string {
	b, _ := os.ReadFile(r.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// leadership asks the replica's /healthz who leads.
func (r *replica) leadership(ctx context.Context) (coord.Leadership, error) {
	var h struct{ Leadership coord.Leadership }
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/healthz", nil)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return h.Leadership, err
	}
	defer res.Body.Close()
	err = json.NewDecoder(res.Body).Decode(&h)
	return h.Leadership, err
}

// TestFailoverLeaderKilledMidBillingAndMidRound runs three coordinator
// processes on one Postgres database, with two agents, on-demand instances
// and a spot bid, on a clock 60 times faster than real time (a billed
// minute and a spot round every second). It stalls the leader inside a
// billing transaction (charges written, not committed) and kills it with
// SIGKILL, then does the same to the next leader inside a spot round; after
// each kill another replica must take over within the lease time, and in
// the end every instance must have been charged each minute it ran exactly
// once, no GPU may have been given twice, no interval cleared twice, and
// the ledger invariants must hold.
func TestFailoverLeaderKilledMidBillingAndMidRound(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three coordinators on Postgres")
	}
	db := pgtest.FreshDatabase(t)
	bin := gpumarketBinary(t)
	ctx := t.Context()
	dir := t.TempDir()
	const leaseTTL = 2 * time.Second
	epoch := time.Now().UTC().Format(time.RFC3339Nano)

	var reps []*replica
	var urls []string
	for i := range 3 {
		name := fmt.Sprintf("c%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		r := &replica{
			name: name, bin: bin, url: "http://" + addr,
			failfile: filepath.Join(dir, name+".failpoint"), logPath: filepath.Join(dir, name+".log"),
			stalled: make(chan struct{}, 1),
			args: []string{"serve", "--db", db, "--listen", addr, "--speedup", "60", "--clock-epoch", epoch,
				"--tick", "100ms", "--lease-ttl", leaseTTL.String(), "--lost-after", "20s", "--heartbeat-flush", "1s",
				"--spot-interval", "1m", "--log-format", "json",
				// Its machines are registered by hand and answer no challenges.
				"--no-require-verification"},
		}
		reps = append(reps, r)
		urls = append(urls, r.url)
	}
	t.Cleanup(func() {
		for _, r := range reps {
			r.stop()
		}
		if t.Failed() {
			for _, r := range reps {
				t.Logf("log of %s (last lines):\n%s", r.name, r.tail())
			}
		}
	})
	// c1 starts first so that it leads; the others follow.
	for _, r := range reps {
		r.start(t)
	}
	all := strings.Join(urls, ",")

	leader := func(exclude *replica) *replica {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			for _, r := range reps {
				if r == exclude {
					continue
				}
				if l, err := r.leadership(ctx); err == nil && l.IsLeader {
					return r
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no replica became leader within 30 s")
		return nil
	}

	// Accounts through different replicas.
	secrets := map[string]string{}
	login := func(base, email, password string) *apiclient.Client {
		t.Helper()
		res, err := apiclient.New(base, "", nil).Login(ctx, market.LoginRequest{Email: email, Password: password})
		if err != nil {
			t.Fatalf("login %s: %v", email, err)
		}
		secrets[email] = res.Key.Secret
		return apiclient.New(all, res.Key.Secret, nil)
	}
	signup := func(base, email string, role market.Role) *apiclient.Client {
		t.Helper()
		if _, err := apiclient.New(base, "", nil).Signup(ctx, market.SignupRequest{Email: email, Password: "password-1", Roles: []market.Role{role}}); err != nil {
			t.Fatalf("signup %s: %v", email, err)
		}
		return login(base, email, "password-1")
	}
	admin := login(urls[0], "admin@example.com", "admin-password-1")
	host := signup(urls[1], "host@example.com", market.RoleHost)
	renter := signup(urls[2], "renter@example.com", market.RoleRenter)
	must[market.Transfer](t, "deposit")(admin.Deposit(ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5000)}, "failover-deposit"))

	// Two real agents, each knowing all three replicas.
	for range 2 {
		actx, cancel := context.WithCancel(ctx)
		a, err := newAgent(actx, agentOptions{
			StateDir: t.TempDir(), FakeGPUs: "4xRTX 4090", Client: host, Logger: slog.New(slog.DiscardHandler),
			HeartbeatInterval: 200 * time.Millisecond, PollWait: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	var ms []market.Machine
	eventually(t, "both agents to register", func() (bool, error) {
		var err error
		ms, err = host.Machines(ctx, false)
		return len(ms) == 2, err
	})
	slices.SortFunc(ms, func(a, b market.Machine) int { return strings.Compare(string(a.ID), string(b.ID)) })
	odm, spotm := ms[0], ms[1]
	price, reserve, energy := market.Money(1_200_000), market.Tokens(1), market.Money(100_000)
	for _, m := range ms {
		must[market.Machine](t, "set terms")(host.UpdateMachine(ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price, SpotReservePerGPUDay: &reserve, EnergyPerKWh: &energy}))
		must[market.Machine](t, "list")(host.ListMachine(ctx, m.ID))
	}

	// Ten creates for one GPU each race through the three replicas for
	// the on-demand machine's four GPUs.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var created []market.Instance
	for i := range 10 {
		c := apiclient.New(urls[i%3], secrets["renter@example.com"], nil)
		wg.Go(func() {
			inst, err := c.CreateInstance(ctx, market.CreateInstanceRequest{Machine: odm.ID, GPUs: 1, Command: []string{"/bin/sh", "-c", "while :; do sleep 1; done"}})
			switch {
			case err == nil:
				mu.Lock()
				created = append(created, inst)
				mu.Unlock()
			case !market.IsKind(err, market.Conflict) && !market.IsKind(err, market.Unavailable):
				t.Errorf("create %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if len(created) == 0 || len(created) > 4 {
		t.Fatalf("%d of 10 racing creates for 4 GPUs succeeded", len(created))
	}
	snap := must[market.Snapshot](t, "snapshot")(renter.Snapshot(ctx))
	power := 0
	for _, m := range snap.Machines {
		if m.Machine == spotm.ID {
			power = m.MaxPowerW
		}
	}
	if power == 0 {
		t.Fatalf("spot machine %s not in the snapshot %+v", spotm.ID, snap)
	}
	bid := must[market.Bid](t, "bid")(renter.CreateBid(ctx, market.CreateBidRequest{Machine: spotm.ID, PricePerGPUDay: market.Tokens(30), PowerLimitW: power,
		NoticeSeconds: 1, Command: []string{"/bin/sh", "-c", "while :; do sleep 1; done"}}))
	eventually(t, "every instance running and the bid winning", func() (bool, error) {
		insts, err := renter.Instances(ctx)
		running := 0
		for _, i := range insts {
			if i.State == market.InstanceRunning {
				running++
			}
		}
		return running == len(created)+1, err
	})

	billed := func() int64 {
		insts, err := renter.Instances(ctx)
		if err != nil {
			t.Fatalf("instances: %v", err)
		}
		var n int64
		for _, i := range insts {
			n += i.BilledMins
		}
		return n
	}

	// killAt arms the leader's failpoint, waits until the leader stalls
	// inside that transaction, kills it, and returns how long the others
	// took to elect a new leader.
	killAt := func(what string) time.Duration {
		t.Helper()
		l := leader(nil)
		before := must[coord.Leadership](t, "leadership")(l.leadership(ctx))
		if err := os.WriteFile(l.failfile, []byte(what), 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.stalled:
		case <-time.After(20 * time.Second):
			t.Fatalf("leader %s did not reach the %s failpoint in 20 s", l.name, what)
		}
		l.kill()
		killed := time.Now()
		next := leader(l)
		took := time.Since(killed)
		after := must[coord.Leadership](t, "leadership")(next.leadership(ctx))
		if after.Generation <= before.Generation {
			t.Errorf("new leader %s has generation %d, not above the killed leader's %d", next.name, after.Generation, before.Generation)
		}
		t.Logf("killed leader %s inside a %s transaction; %s took over in %s (lease %s), generation %d -> %d",
			l.name, what, next.name, took.Round(time.Millisecond), leaseTTL, before.Generation, after.Generation)
		if took > leaseTTL+3*time.Second {
			t.Errorf("takeover took %s, more than the lease (%s) and a few ticks", took, leaseTTL)
		}
		l.start(t) // it comes back as a follower
		b0 := billed()
		eventually(t, "billing to go on under the new leader", func() (bool, error) { return billed() > b0+int64(len(created)), nil })
		return took
	}
	time.Sleep(2 * time.Second) // a few billed minutes and rounds first
	killAt("charge")
	killAt("round")
	time.Sleep(2 * time.Second)

	// Stop everything; wait for every instance to be settled.
	for _, i := range created {
		must[market.Instance](t, "stop")(renter.StopInstance(ctx, i.ID))
	}
	must[market.Bid](t, "cancel bid")(renter.CancelBid(ctx, bid.ID))
	var insts []market.Instance
	eventually(t, "every instance settled", func() (bool, error) {
		var err error
		insts, err = renter.Instances(ctx)
		for _, i := range insts {
			if !i.Settled {
				return false, err
			}
		}
		return len(insts) == len(created)+1, err
	})

	// Each minute it ran charged exactly once: as many minutes as
	// started between start and stop (the last partial one included).
	for _, i := range insts {
		if i.StartedAt == nil || i.StopAt == nil {
			t.Errorf("instance %s: started %v, stop %v", i.ID, i.StartedAt, i.StopAt)
			continue
		}
		ran := i.StopAt.Sub(*i.StartedAt)
		want := int64(ran / time.Minute)
		if ran%time.Minute != 0 {
			want++
		}
		if i.BilledMins != want {
			t.Errorf("instance %s ran %s and was billed %d minutes; want %d", i.ID, ran, i.BilledMins, want)
		}
		if i.BilledMins < 5 {
			t.Errorf("instance %s was billed only %d minutes; the test did not run long enough", i.ID, i.BilledMins)
		}
	}
	// No GPU given twice: instances on one machine that overlapped in time
	// hold different GPUs.
	for a := range insts {
		for b := range a {
			x, y := insts[a], insts[b]
			if x.Machine != y.Machine || !x.EndedAt.After(y.CreatedAt) || !y.EndedAt.After(x.CreatedAt) {
				continue
			}
			for _, g := range x.GPUs {
				if slices.Contains(y.GPUs, g) {
					t.Errorf("GPU %d of %s given to %s and %s at once", g, x.Machine, x.ID, y.ID)
				}
			}
		}
	}
	// No interval cleared twice for a machine, and every round replays.
	rounds := must[[]coord.AuctionRound](t, "rounds")(admin.Rounds(ctx, apiclient.RoundQuery{Machine: spotm.ID, Limit: 1000}))
	seen := map[time.Time]market.RoundID{}
	for _, r := range rounds {
		if prev, ok := seen[r.At]; ok {
			t.Errorf("interval %s of %s cleared twice: rounds %s and %s", r.At, spotm.ID, prev, r.ID)
		}
		seen[r.At] = r.ID
	}
	if len(rounds) < 3 {
		t.Errorf("only %d rounds were stored", len(rounds))
	}
	for _, r := range rounds[:min(len(rounds), 20)] {
		if rp := must[coord.RoundReplay](t, "replay")(admin.ReplayRound(ctx, r.ID)); !rp.Match {
			t.Errorf("round %s does not replay: %+v", r.ID, rp)
		}
	}
	rep := must[market.LedgerReport](t, "ledger check")(admin.LedgerCheck(ctx))
	if !rep.OK {
		t.Errorf("ledger invariants broken: %+v", rep.Checks)
	}
	t.Logf("%d instances, %d minutes billed, %d rounds on the spot machine, %d transfers, invariants hold", len(insts), billed(), len(rounds), rep.Transfers)
}

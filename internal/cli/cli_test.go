package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

var t0 = time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)

// fakeCoordinator implements a few routes of the API in memory.
type fakeCoordinator struct {
	mu         sync.Mutex
	secret     string // the one valid API key
	instances  map[market.InstanceID]*market.Instance
	logs       []market.LogChunk
	polls      int // logs requests with wait > 0
	stopAfter  int // the instance becomes stopped after this many long polls
	idemKeys   []string
	revoked    []string
	lastCreate market.CreateInstanceRequest
	createKeys []string // the Idempotency-Key of each create
}

func newFake() *fakeCoordinator {
	return &fakeCoordinator{secret: "sek-1", instances: map[market.InstanceID]*market.Instance{
		"i-1": {ID: "i-1", Machine: "m-1", GPUs: []int{0, 1}, State: market.InstanceRunning,
			PricePerHour: market.Tokens(2), Charged: market.Micro / 4, CreatedAt: t0, Command: []string{"train"}},
	}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, kind market.Kind, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": kind.String(), "message": msg}})
}

func (f *fakeCoordinator) handler() http.Handler {
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+f.secret {
				fail(w, http.StatusUnauthorized, market.Unauthorized, "no valid API key; run 'gpumarket login'")
				return
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			h(w, r)
		}
	}
	mux.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		var req market.LoginRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Email != "ada@example.com" || req.Password != "pw" {
			fail(w, http.StatusUnauthorized, market.Unauthorized, "wrong email or password")
			return
		}
		writeJSON(w, http.StatusOK, market.LoginResult{
			Account: market.Account{ID: "a-1", Email: req.Email, Roles: []market.Role{market.RoleRenter}},
			Key:     market.NewAPIKey{APIKey: market.APIKey{ID: "k-1", Name: req.KeyName}, Secret: f.secret},
		})
	})
	mux.HandleFunc("GET /api/v1/me", auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, market.Account{ID: "a-1", Email: "ada@example.com",
			Roles: []market.Role{market.RoleRenter, market.RoleHost}, CreatedAt: t0})
	}))
	mux.HandleFunc("DELETE /api/v1/keys/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		f.revoked = append(f.revoked, r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/instances", auth(func(w http.ResponseWriter, r *http.Request) {
		var req market.CreateInstanceRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.lastCreate = req
		f.createKeys = append(f.createKeys, r.Header.Get("Idempotency-Key"))
		if req.GPUs > 2 {
			fail(w, http.StatusConflict, market.Conflict, "machine m-1 has 2 free GPUs; ask for at most 2")
			return
		}
		inst := &market.Instance{ID: "i-2", Machine: req.Machine, GPUs: []int{0}, State: market.InstancePending,
			Command: req.Command, Env: req.Env, PricePerHour: market.Micro / 2, Escrow: market.Micro / 2,
			CreatedAt: t0, GraceSeconds: req.GraceSeconds}
		f.instances[inst.ID] = inst
		writeJSON(w, http.StatusCreated, inst)
	}))
	mux.HandleFunc("GET /api/v1/instances", auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []*market.Instance{f.instances["i-1"]})
	}))
	mux.HandleFunc("GET /api/v1/instances/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		inst, ok := f.instances[market.InstanceID(r.PathValue("id"))]
		if !ok {
			fail(w, http.StatusNotFound, market.NotFound, "no instance "+r.PathValue("id"))
			return
		}
		writeJSON(w, http.StatusOK, inst)
	}))
	mux.HandleFunc("GET /api/v1/instances/{id}/logs", auth(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var after int64
		_ = json.Unmarshal([]byte(q.Get("after")), &after)
		if q.Get("wait") != "" {
			f.polls++
			if f.stopAfter > 0 && f.polls == f.stopAfter {
				// The last output arrives together with the final state.
				f.logs = append(f.logs, market.LogChunk{Seq: int64(len(f.logs) + 1), Stream: "stdout", Data: "done\n"})
				code := 0
				f.instances["i-1"].State = market.InstanceStopped
				f.instances["i-1"].ExitCode = &code
			}
		}
		out := []market.LogChunk{}
		for _, c := range f.logs {
			if c.Seq > after {
				out = append(out, c)
			}
		}
		writeJSON(w, http.StatusOK, out)
	}))
	mux.HandleFunc("POST /api/v1/wallet/deposit", auth(func(w http.ResponseWriter, r *http.Request) {
		var req market.DepositRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		key := r.Header.Get("Idempotency-Key")
		f.idemKeys = append(f.idemKeys, key)
		writeJSON(w, http.StatusOK, market.Transfer{ID: "t-1", Key: key, Kind: market.TransferDeposit,
			Asset: market.DefaultAsset, Memo: req.Email,
			Entries: []market.Entry{{Account: market.WorldAccount, Amount: -req.Amount}, {Account: market.Available("a-1"), Amount: req.Amount}}})
	}))
	mux.HandleFunc("GET /api/v1/wallet", auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, market.Wallet{Account: "a-1", Asset: market.DefaultAsset,
			Available: market.Tokens(12) + market.Micro/2, Escrow: market.Micro / 2})
	}))
	return mux
}

// harness runs the CLI against a fake coordinator with a config file in a
// temporary directory.
type harness struct {
	t    *testing.T
	fake *fakeCoordinator
	url  string
	cfg  string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	t.Setenv("GPUMARKET_URL", "")
	t.Setenv("GPUMARKET_TOKEN", "")
	f := newFake()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	return &harness{t: t, fake: f, url: srv.URL, cfg: filepath.Join(t.TempDir(), "gpumarket", "config.json")}
}

type result struct {
	code           int
	stdout, stderr string
}

func (h *harness) runIn(ctx context.Context, stdin string, args ...string) result {
	h.t.Helper()
	var out, errb bytes.Buffer
	all := append([]string{"--config", h.cfg, "--coordinator", h.url}, args...)
	code := run(ctx, all, strings.NewReader(stdin), &out, &errb, func(e *Env) {
		e.loc = time.UTC
		e.followWait = 10 * time.Millisecond
	})
	return result{code, out.String(), errb.String()}
}

func (h *harness) run(args ...string) result {
	h.t.Helper()
	return h.runIn(context.Background(), "", args...)
}

// authed runs with the fake's valid token.
func (h *harness) authed(args ...string) result {
	h.t.Helper()
	return h.run(append([]string{"--token", h.fake.secret}, args...)...)
}

func TestLoginWritesConfigAndWhoamiUsesIt(t *testing.T) {
	h := newHarness(t)
	r := h.runIn(context.Background(), "pw\n", "login", "--email", "ada@example.com")
	if r.code != 0 {
		t.Fatalf("login: code %d, stderr %q", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "Logged in to "+h.url+" as ada@example.com. API key k-1 saved in ") {
		t.Errorf("login stdout = %q", r.stdout)
	}
	st, err := os.Stat(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(h.cfg)
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	want := Config{Coordinator: h.url, Token: "sek-1", Email: "ada@example.com", KeyID: "k-1"}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	// Without --coordinator: both the URL and the key come from the config.
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--config", h.cfg, "whoami"}, strings.NewReader(""), &out, &errb, nil)
	if code != 0 {
		t.Fatalf("whoami: code %d, stderr %q", code, errb.String())
	}
	wantOut := "Email:        ada@example.com\nAccount:      a-1\nRoles:        renter,host\nCoordinator:  " + h.url + "\n"
	if diff := cmp.Diff(wantOut, out.String()); diff != "" {
		t.Errorf("whoami (-want +got):\n%s", diff)
	}

	r = h.run("-o", "json", "whoami")
	var acct market.Account
	if err := json.Unmarshal([]byte(r.stdout), &acct); err != nil || acct.Email != "ada@example.com" {
		t.Errorf("whoami -o json = %q (%v)", r.stdout, err)
	}

	r = h.run("logout")
	if r.code != 0 || !strings.Contains(r.stdout, "Logged out") {
		t.Errorf("logout: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if diff := cmp.Diff([]string{"k-1"}, h.fake.revoked); diff != "" {
		t.Errorf("revoked keys (-want +got):\n%s", diff)
	}
	r = h.run("whoami")
	if r.code != 1 || r.stderr != "error: no valid API key; run 'gpumarket login'\n" {
		t.Errorf("whoami after logout: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestLoginWrongPassword(t *testing.T) {
	h := newHarness(t)
	r := h.run("login", "--email", "ada@example.com", "--password", "nope")
	if r.code != 1 || r.stderr != "error: wrong email or password\n" {
		t.Errorf("code %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(h.cfg); !os.IsNotExist(err) {
		t.Errorf("config written after a failed login (stat err %v)", err)
	}
}

func TestInstanceCreate(t *testing.T) {
	h := newHarness(t)
	r := h.authed("instance", "create", "m-1", "--gpus", "1", "--env", "A=1;x=y", "--env", "B=", "--grace", "1500ms",
		"--", "python", "train.py", "--lr", "3e-4")
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	wantReq := market.CreateInstanceRequest{Machine: "m-1", GPUs: 1, Command: []string{"python", "train.py", "--lr", "3e-4"},
		Env: map[string]string{"A": "1;x=y", "B": ""}, GraceSeconds: 2}
	if diff := cmp.Diff(wantReq, h.fake.lastCreate); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	wantOut := "Created instance i-2 on m-1 (GPUs 0) at 0.50 GMT per hour; 0.50 GMT held in escrow.\n" +
		"Follow its output with: gpumarket instance logs i-2 -f\n"
	if diff := cmp.Diff(wantOut, r.stdout); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}

	r = h.authed("-o", "json", "instance", "create", "m-1", "--gpus", "1", "--", "true")
	var inst market.Instance
	if err := json.Unmarshal([]byte(r.stdout), &inst); err != nil {
		t.Fatalf("json output %q: %v", r.stdout, err)
	}
	if inst.ID != "i-2" || inst.PricePerHour != market.Micro/2 || !strings.Contains(r.stdout, "\n  \"id\": \"i-2\"") {
		t.Errorf("json output = %s", r.stdout)
	}
	// Each invocation holds money under its own idempotency key.
	if k := h.fake.createKeys; len(k) != 2 || !strings.HasPrefix(k[0], "cli-") || !strings.HasPrefix(k[1], "cli-") || k[0] == k[1] {
		t.Errorf("create keys = %q; want two different cli- keys", k)
	}
}

func TestInstanceList(t *testing.T) {
	h := newHarness(t)
	r := h.authed("instance", "list")
	want := "" +
		"ID   MACHINE  GPUS  STATE    PRICE/H   CHARGED   CREATED              COMMAND\n" +
		"i-1  m-1      0,1   running  2.00 GMT  0.25 GMT  2026-11-02 09:30:00  train\n"
	if diff := cmp.Diff(want, r.stdout); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	r = h.authed("instance", "list", "-o", "json")
	var got []market.Instance
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 || got[0].ID != "i-1" {
		t.Errorf("json = %q (%v)", r.stdout, err)
	}
}

func TestErrors(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name       string
		args       []string
		code       int
		wantStderr string // exact, or a prefix when it ends with "*"
	}{
		{"server conflict", []string{"instance", "create", "m-1", "--gpus", "3", "--", "x"}, 1,
			"error: machine m-1 has 2 free GPUs; ask for at most 2\n"},
		{"not found", []string{"instance", "show", "i-9"}, 1, "error: no instance i-9\n"},
		{"bad env", []string{"instance", "create", "m-1", "--gpus", "1", "--env", "NOEQUALS"}, 2,
			"error: --env \"NOEQUALS\": write it as KEY=VALUE\n"},
		{"missing flag", []string{"instance", "create", "m-1"}, 2, "error: missing flags: --gpus=N*"},
		{"unknown verb", []string{"instance", "explode"}, 2, "error: unexpected argument explode*"},
		{"bad amount", []string{"wallet", "deposit", "--email", "a@b.c", "1.2345678"}, 2,
			"error: amount \"1.2345678\" has more than 6 decimals*"},
		{"bad output", []string{"-o", "yaml", "wallet"}, 2, "error: --output must be one of*"},
		{"bad coordinator", []string{"--coordinator", "localhost:8080", "wallet"}, 2,
			"error: coordinator URL \"localhost:8080\" is not valid*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.authed(tt.args...)
			if r.code != tt.code {
				t.Errorf("code = %d, want %d (stderr %q)", r.code, tt.code, r.stderr)
			}
			if p, ok := strings.CutSuffix(tt.wantStderr, "*"); ok {
				if !strings.HasPrefix(r.stderr, p) {
					t.Errorf("stderr = %q, want it to start with %q", r.stderr, p)
				}
			} else if r.stderr != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", r.stderr, tt.wantStderr)
			}
			if strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", r.stderr)
			}
		})
	}
}

func TestUnreachableCoordinator(t *testing.T) {
	h := newHarness(t)
	h.url = "http://127.0.0.1:1"
	r := h.authed("wallet", "show")
	if r.code != 1 || !strings.Contains(r.stderr, "check that the coordinator runs at http://127.0.0.1:1") {
		t.Errorf("code %d, stderr %q", r.code, r.stderr)
	}
}

func TestWallet(t *testing.T) {
	h := newHarness(t)
	r := h.authed("wallet", "show")
	want := "Available:  12.50 GMT\nIn escrow:  0.50 GMT\nEarnings:   0.00 GMT\n"
	if diff := cmp.Diff(want, r.stdout); diff != "" {
		t.Errorf("wallet (-want +got):\n%s", diff)
	}
	r = h.authed("wallet", "-o", "json")
	if !strings.Contains(r.stdout, `"available": "12.50"`) {
		t.Errorf("wallet -o json = %s", r.stdout)
	}
}

func TestDepositIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	r := h.authed("wallet", "deposit", "--email", "ada@example.com", "10", "--idempotency-key", "inv-1")
	if r.code != 0 || r.stdout != "Deposited 10.00 GMT to ada@example.com (transfer t-1, idempotency key inv-1).\n" {
		t.Errorf("code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	h.authed("wallet", "deposit", "--email", "ada@example.com", "10")
	h.authed("wallet", "deposit", "--email", "ada@example.com", "10")
	keys := h.fake.idemKeys
	if len(keys) != 3 || keys[0] != "inv-1" || keys[1] == "" || keys[1] == keys[2] {
		t.Errorf("idempotency keys = %q; want inv-1 then two different random keys", keys)
	}
}

func TestLogsFollow(t *testing.T) {
	h := newHarness(t)
	h.fake.logs = []market.LogChunk{
		{Seq: 1, Stream: "stdout", Data: "epoch 1\n"},
		{Seq: 2, Stream: "stderr", Data: "warning\n"},
	}
	h.fake.stopAfter = 3
	r := h.authed("instance", "logs", "i-1", "-f")
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	if want := "epoch 1\ndone\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	if want := "warning\ninstance i-1 is stopped (exit code 0)\n"; r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}

	r = h.authed("-o", "json", "instance", "logs", "i-1")
	var chunks []market.LogChunk
	if err := json.Unmarshal([]byte(r.stdout), &chunks); err != nil || len(chunks) != 3 {
		t.Errorf("logs -o json = %q (%v)", r.stdout, err)
	}
}

func TestLogsFollowStopsOnCancel(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() { done <- h.runIn(ctx, "", "--token", h.fake.secret, "instance", "logs", "i-1", "-f") }()
	deadline := time.Now().Add(10 * time.Second)
	for { // wait until it is following, then interrupt it
		h.fake.mu.Lock()
		n := h.fake.polls
		h.fake.mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case r := <-done:
		if r.code != 0 || r.stderr != "" {
			t.Errorf("code %d, stderr %q; want a clean stop", r.code, r.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not stop after cancel")
	}
}

// offer search --help lists every query field on a line of its own, with
// its description: the help printer runs unindented text together into
// one paragraph, which once made the list unreadable.
func TestOfferSearchHelpListsFields(t *testing.T) {
	h := newHarness(t)
	r := h.run("offer", "search", "--help")
	if r.code != 0 {
		t.Fatalf("code %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(r.stdout, "\n")
	for _, f := range match.Fields() {
		found := false
		for k, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), f.Name+"  ") && k+1 < len(lines) && strings.Contains(lines[k+1], strings.Fields(f.Doc)[0]) {
				found = true
			}
		}
		if !found {
			t.Errorf("field %s is not on a line of its own followed by its description in:\n%s", f.Name, r.stdout)
		}
	}
}

func TestHelpForEveryVerb(t *testing.T) {
	h := newHarness(t)
	verbs := [][]string{
		{}, {"signup"}, {"login"}, {"logout"}, {"whoami"},
		{"key"}, {"key", "create"}, {"key", "list"}, {"key", "revoke"},
		{"machine"}, {"machine", "list"}, {"machine", "show"}, {"machine", "set"},
		{"machine", "list-for-rent"}, {"machine", "unlist"},
		{"offer"}, {"offer", "search"},
		{"instance"}, {"instance", "create"}, {"instance", "list"}, {"instance", "show"},
		{"instance", "logs"}, {"instance", "stop"},
		{"wallet"}, {"wallet", "show"}, {"wallet", "history"}, {"wallet", "deposit"}, {"wallet", "faucet"},
		{"earnings"}, {"events"},
	}
	for _, v := range verbs {
		t.Run(strings.Join(append([]string{"gpumarket"}, v...), " "), func(t *testing.T) {
			r := h.run(append(v, "--help")...)
			if r.code != 0 {
				t.Errorf("code = %d, stderr %q", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "Usage: gpumarket") {
				t.Errorf("no usage in %q", r.stdout)
			}
			if len(v) == 2 && !strings.Contains(r.stdout, "Example") {
				t.Errorf("help of %q has no examples:\n%s", v, r.stdout)
			}
		})
	}
}

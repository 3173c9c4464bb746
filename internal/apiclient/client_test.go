package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

// fakeAPI is a few routes with real behaviour and a record of what arrived.
type fakeAPI struct {
	t        *testing.T
	token    string
	lastAuth string
	lastIdem string
	lastQS   string
	polled   chan string // gets the query of each long poll once it waits
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(w http.ResponseWriter, status int, code, msg string) {
		write(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
	}
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			f.lastAuth = r.Header.Get("Authorization")
			if f.lastAuth != "Bearer "+f.token {
				fail(w, http.StatusUnauthorized, "unauthorized", "no valid API key; run gpumarket login")
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /api/v1/instances", auth(func(w http.ResponseWriter, r *http.Request) {
		f.lastIdem = r.Header.Get("Idempotency-Key")
		var req market.CreateInstanceRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			fail(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		if req.GPUs > 2 {
			fail(w, http.StatusConflict, "conflict", "machine m-1 has 2 free GPUs; ask for at most 2")
			return
		}
		gpus := make([]int, req.GPUs)
		for i := range gpus {
			gpus[i] = i
		}
		write(w, http.StatusCreated, market.Instance{ID: "i-1", Machine: req.Machine, GPUs: gpus,
			Command: req.Command, Env: req.Env, State: market.InstancePending,
			PricePerHour: market.Tokens(1), GraceSeconds: req.GraceSeconds})
	}))
	mux.HandleFunc("GET /api/v1/offers", auth(func(w http.ResponseWriter, r *http.Request) {
		f.lastQS = r.URL.RawQuery
		write(w, http.StatusOK, nil) // null must become an empty list
	}))
	mux.HandleFunc("DELETE /api/v1/keys/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "k-1" {
			fail(w, http.StatusNotFound, "not_found", "no key "+r.PathValue("id"))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /api/v1/wallet/deposit", auth(func(w http.ResponseWriter, r *http.Request) {
		f.lastIdem = r.Header.Get("Idempotency-Key")
		var req market.DepositRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		write(w, http.StatusOK, market.Transfer{ID: "t-1", Key: f.lastIdem, Kind: market.TransferDeposit,
			Asset: market.DefaultAsset, Memo: req.Email, Entries: []market.Entry{{Account: "world", Amount: -req.Amount}}})
	}))
	mux.HandleFunc("GET /api/v1/instances/{id}/logs", auth(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "" {
			f.polled <- r.URL.RawQuery
			<-r.Context().Done() // a long poll that never finds chunks
			return
		}
		f.lastQS = r.URL.RawQuery
		write(w, http.StatusOK, []market.LogChunk{{Instance: "i-1", Seq: 3, Stream: "stdout", Data: "hi\n"}})
	}))
	mux.HandleFunc("GET /api/v1/me", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>proxy error</html>"))
	})
	mux.HandleFunc("GET /api/v1/wallet", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusPaymentRequired, "some_future_kind", "top up your wallet")
	})
	return mux
}

func newTestClient(t *testing.T) (*Client, *fakeAPI) {
	t.Helper()
	f := &fakeAPI{t: t, token: "secret-1", polled: make(chan string, 1)}
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	return New(srv.URL+"/", f.token, srv.Client()), f
}

func TestCreateInstanceRoundTrip(t *testing.T) {
	c, f := newTestClient(t)
	req := market.CreateInstanceRequest{Machine: "m-1", GPUs: 2, Command: []string{"sh", "-c", "echo hi"},
		Env: map[string]string{"A": "b=c"}, GraceSeconds: 10}
	got, err := c.CreateInstance(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := market.Instance{ID: "i-1", Machine: "m-1", GPUs: []int{0, 1}, Command: req.Command, Env: req.Env,
		State: market.InstancePending, PricePerHour: market.Tokens(1), GraceSeconds: 10}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("instance (-want +got):\n%s", diff)
	}
	if f.lastAuth != "Bearer secret-1" {
		t.Errorf("Authorization = %q, want Bearer secret-1", f.lastAuth)
	}
	// A create holds money: it always carries an Idempotency-Key, a fresh
	// one per call unless the caller keeps its own.
	first := f.lastIdem
	if _, err := c.CreateInstance(context.Background(), req); err != nil || first == "" || f.lastIdem == first {
		t.Errorf("CreateInstance sent keys %q then %q (%v); want two different random keys", first, f.lastIdem, err)
	}
	if _, err := c.CreateInstanceOnce(context.Background(), req, "mine-1"); err != nil || f.lastIdem != "mine-1" {
		t.Errorf("CreateInstanceOnce sent key %q (%v), want mine-1", f.lastIdem, err)
	}
	if _, err := c.CreateInstanceOnce(context.Background(), req, ""); !market.IsKind(err, market.Invalid) {
		t.Errorf("CreateInstanceOnce without a key: %v, want invalid", err)
	}
}

// TestCreateRetriedElsewhereWithItsKey: a create whose connection broke
// after it was sent may have taken effect, so it is retried on another
// replica only because it carries an Idempotency-Key, the same one.
func TestCreateRetriedElsewhereWithItsKey(t *testing.T) {
	var keys []string
	var mu sync.Mutex
	seen := func(r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
	}
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen(r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // the request arrived; the answer never leaves
		}
	}))
	defer broken.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"i-1"}`))
	}))
	defer up.Close()
	c := New(broken.URL+","+up.URL, "gmk_x", nil)
	inst, err := c.CreateInstance(t.Context(), market.CreateInstanceRequest{Machine: "m-1", GPUs: 1})
	if err != nil || inst.ID != "i-1" {
		t.Fatalf("create = %+v, %v", inst, err)
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Errorf("keys sent = %q; want one key, sent to both replicas", keys)
	}
}

func TestServerErrors(t *testing.T) {
	c, _ := newTestClient(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func() error
		kind     market.Kind
		wantText string
	}{
		{"conflict", func() error {
			_, err := c.CreateInstance(ctx, market.CreateInstanceRequest{Machine: "m-1", GPUs: 3})
			return err
		}, market.Conflict, "machine m-1 has 2 free GPUs; ask for at most 2"},
		{"unauthorized", func() error {
			_, err := c.WithToken("wrong").Offers(ctx, market.OfferFilter{})
			return err
		}, market.Unauthorized, "no valid API key; run gpumarket login"},
		{"not found on delete", func() error { return c.RevokeKey(ctx, "k-2") }, market.NotFound, "no key k-2"},
		{"unknown code falls back to status", func() error {
			_, err := c.Wallet(ctx)
			return err
		}, market.InsufficientFunds, "top up your wallet"},
		{"non-JSON body", func() error {
			_, err := c.Me(ctx)
			return err
		}, market.Unavailable, "coordinator answered 502 Bad Gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var me *market.Error
			if !errors.As(err, &me) {
				t.Fatalf("error %v (%T) is not a *market.Error", err, err)
			}
			if !market.IsKind(err, tt.kind) {
				t.Errorf("kind = %v, want %v", market.KindOf(err), tt.kind)
			}
			if err.Error() != tt.wantText {
				t.Errorf("message = %q, want %q", err.Error(), tt.wantText)
			}
		})
	}
}

func TestRevokeNoContent(t *testing.T) {
	c, _ := newTestClient(t)
	if err := c.RevokeKey(context.Background(), "k-1"); err != nil {
		t.Fatal(err)
	}
}

func TestOffersQueryAndEmptyList(t *testing.T) {
	c, f := newTestClient(t)
	got, err := c.Offers(context.Background(), market.OfferFilter{GPUName: "RTX 4090", MinGPUs: 2,
		MaxPrice: market.Micro / 2, MinGPURAMGB: 24})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || len(got) != 0 {
		t.Errorf("offers = %#v, want an empty non-nil list", got)
	}
	if want := "gpu_name=RTX+4090&max_price=0.50&min_gpu_ram_gb=24&num_gpus=2"; f.lastQS != want {
		t.Errorf("query = %q, want %q", f.lastQS, want)
	}
}

func TestDepositIdempotencyKey(t *testing.T) {
	c, f := newTestClient(t)
	tr, err := c.Deposit(context.Background(), market.DepositRequest{Email: "a@b.c", Amount: market.Tokens(5)}, "key-42")
	if err != nil {
		t.Fatal(err)
	}
	if f.lastIdem != "key-42" || tr.Key != "key-42" {
		t.Errorf("Idempotency-Key sent %q, transfer key %q; want key-42", f.lastIdem, tr.Key)
	}
	if _, err := c.Deposit(context.Background(), market.DepositRequest{}, ""); !market.IsKind(err, market.Invalid) {
		t.Errorf("deposit without key: err = %v, want an Invalid error", err)
	}
}

func TestLogsQuery(t *testing.T) {
	c, f := newTestClient(t)
	got, err := c.Logs(context.Background(), "i-1", 2, 50, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Data != "hi\n" {
		t.Errorf("logs = %#v", got)
	}
	if want := "after=2&limit=50"; f.lastQS != want {
		t.Errorf("query = %q, want %q", f.lastQS, want)
	}
}

func TestLongPollCancel(t *testing.T) {
	c, f := newTestClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Logs(ctx, "i-1", 7, 0, 1500*time.Millisecond)
		done <- err
	}()
	if q := <-f.polled; q != "after=7&wait=2" {
		t.Errorf("query = %q, want after=7&wait=2 (wait rounded up)", q)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not stop after cancel")
	}
}

func TestTransportError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	c := New(addr, "", nil)
	_, err = c.Me(context.Background())
	if !market.IsKind(err, market.Unavailable) {
		t.Errorf("kind = %v, want unavailable (err %v)", market.KindOf(err), err)
	}
	for _, want := range []string{addr + "/api/v1/me", "check that the coordinator runs at " + addr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestWaitSeconds(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{{0, 0}, {-time.Second, 0}, {time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {30 * time.Second, 30}} {
		if got := waitSeconds(tt.d); got != tt.want {
			t.Errorf("waitSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func TestFailoverToAnotherReplica(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close() // nothing listens there now
	var hits int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"a-1","email":"x@example.com","roles":["renter"]}`))
	}))
	defer up.Close()
	c := New(downURL+","+up.URL, "gmk_x", nil)
	a, err := c.Me(t.Context())
	if err != nil || a.ID != "a-1" {
		t.Fatalf("Me over failover = %+v, %v", a, err)
	}
	// The client now starts with the replica that answered: a POST goes
	// straight there.
	_, _ = c.CreateInstance(t.Context(), market.CreateInstanceRequest{})
	if hits != 2 {
		t.Fatalf("POST did not reach the live replica: hits %d", hits)
	}
	// A POST whose connection could not even be made fails over too.
	c2 := New(downURL+","+up.URL, "gmk_x", nil)
	_, _ = c2.CreateInstance(t.Context(), market.CreateInstanceRequest{})
	if hits != 3 {
		t.Fatalf("POST did not fail over: hits %d", hits)
	}
	all := New(downURL+","+downURL, "", nil)
	if _, err := all.Me(t.Context()); !market.IsKind(err, market.Unavailable) {
		t.Fatalf("all replicas down: err %v, want unavailable", err)
	}
}

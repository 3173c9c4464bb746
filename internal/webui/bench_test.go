package webui_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlite"
	"github.com/gpumarket/gpumarket/internal/webui"
)

type plainPasswords struct{}

func (plainPasswords) Hash(p string) (string, error) { return "p:" + p, nil }
func (plainPasswords) Verify(h, p string) bool       { return h == "p:"+p }

// benchMachines is how many machines the page benchmarks load.
const benchMachines = 10_000

// benchSite is a real coordinator on SQLite with benchMachines listed
// machines (8 GPUs each, 4 models, 10 regions), one host owning hostOwns of
// them, an admin, and a renter; cookies are their web sessions.
type benchSite struct {
	svc                 *coord.Service
	h                   http.Handler
	renter, host, admin string
}

func newBenchSite(b *testing.B, hostOwns int, cacheTTL time.Duration) *benchSite {
	b.Helper()
	ctx := b.Context()
	store, err := sqlite.Open(ctx, b.TempDir()+"/bench.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	svc := coord.New(coord.Config{Store: store, Passwords: plainPasswords{}})
	mk := func(email string, roles ...market.Role) market.Account {
		a, err := svc.CreateAccount(ctx, email, "password-1", roles)
		if err != nil {
			b.Fatal(err)
		}
		return a
	}
	host := mk("host@example.com", market.RoleHost)
	others := mk("others@example.com", market.RoleHost)
	mk("admin@example.com", market.RoleAdmin)
	mk("renter@example.com", market.RoleRenter)

	models := []struct {
		name string
		vram int64
	}{{"RTX 4090", 24564}, {"A100 80GB", 81920}, {"H100 80GB", 81559}, {"L40S", 46068}}
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now().UTC()
	err = store.Tx(ctx, func(tx coord.Tx) error {
		for i := range benchMachines {
			owner := others.ID
			if i < hostOwns {
				owner = host.ID
			}
			md := models[i%len(models)]
			m := market.Machine{
				ID: market.MachineID(fmt.Sprintf("m-bench%06d", i)), Owner: owner, Listed: true, Online: true,
				PricePerGPUHour: market.Money(200_000 + rng.Int64N(3_000_000)),
				LastSeenAt:      now, CreatedAt: now,
				Hardware: market.Hardware{Fingerprint: fmt.Sprintf("fp-%d", i), Hostname: fmt.Sprintf("box-%d", i), Runner: "process",
					CPUCores: 64, RAMMiB: 512 << 10, DiskGiB: 2000, Region: fmt.Sprintf("region-%d", i%10)},
			}
			for g := range 8 {
				m.GPUs = append(m.GPUs, market.GPU{Index: g, UUID: fmt.Sprintf("GPU-%d-%d", i, g), Model: md.name, VRAMMiB: md.vram, MinPowerW: 150, MaxPowerW: 450})
			}
			m.DeriveStatus()
			if err := tx.InsertMachine(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.RebuildIndex(ctx); err != nil {
		b.Fatal(err)
	}
	info := webui.Info{Mode: "bench", CacheTTL: cacheTTL, Stats: func() webui.Stats {
		st, err := svc.Stats(context.Background()) // as cli wires it
		if err != nil {
			b.Error(err)
		}
		return webui.Stats{Machines: st.Machines, OnlineMachines: st.OnlineMachines, RunningInstances: st.RunningInstances}
	}}
	site := &benchSite{svc: svc, h: webui.Handler(info, svc, slog.New(slog.DiscardHandler))}
	login := func(email string) string {
		form := url.Values{"email": {email}, "password": {"password-1"}}
		req := httptest.NewRequest("POST", "/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		site.h.ServeHTTP(rec, req)
		for _, c := range rec.Result().Cookies() {
			if c.Name == "gm_session" {
				return c.Value
			}
		}
		b.Fatalf("log in %s: %d", email, rec.Code)
		return ""
	}
	site.renter, site.host, site.admin = login("renter@example.com"), login("host@example.com"), login("admin@example.com")
	return site
}

func (s *benchSite) get(b *testing.B, cookie, path string) int {
	req := httptest.NewRequest("GET", path, nil)
	req.AddCookie(&http.Cookie{Name: "gm_session", Value: cookie})
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("GET %s: %d\n%.2000s", path, rec.Code, rec.Body)
	}
	return rec.Body.Len()
}

// BenchmarkPages measures the server time of the main pages (handler,
// store reads and template, no network) with 10,000 machines loaded.
//
//	go test -run XXX -bench Pages -benchtime 2s ./internal/webui/
func BenchmarkPages(b *testing.B) {
	site := newBenchSite(b, 100, 0)
	uncached := &benchSite{h: webui.Handler(webui.Info{Mode: "bench", CacheTTL: -1}, site.svc, slog.New(slog.DiscardHandler)),
		renter: site.renter, host: site.host, admin: site.admin}
	for _, tc := range []struct {
		name, path string
		cookie     func() string
		site       *benchSite
	}{
		{"offers-top50", "/offers?q=" + url.QueryEscape("gpu_name=RTX_4090 num_gpus>=2 price_per_gpu_hour<2"), func() string { return site.renter }, nil},
		{"offers-empty-explained", "/offers?q=" + url.QueryEscape("gpu_name=RTX_4090 num_gpus>=9"), func() string { return site.renter }, nil},
		{"machines-host-of-100", "/machines", func() string { return site.host }, nil},
		{"admin-overview", "/admin", func() string { return site.admin }, nil},
		{"admin-overview-uncached", "/admin", func() string { return site.admin }, uncached},
		{"market", "/market", func() string { return site.renter }, nil},
		{"market-uncached", "/market", func() string { return site.renter }, uncached},
		{"home", "/", func() string { return site.renter }, nil},
	} {
		if tc.site == nil {
			tc.site = site
		}
		b.Run(tc.name, func(b *testing.B) {
			size := tc.site.get(b, tc.cookie(), tc.path) // fills the caches
			for b.Loop() {
				size = tc.site.get(b, tc.cookie(), tc.path)
			}
			b.ReportMetric(float64(size)/1024, "KiB/page")
		})
	}
}

package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/httpapi"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

// BenchmarkOfferSearchHTTP measures searches over HTTP on loopback with
// 100,000 machines loaded (8 GPUs, 4 models, 10 regions, random prices):
// a filtered, ranked top-10 query per request, authenticated with an API
// key, from 8 concurrent clients. It reports searches per second and the
// p50/p99 latency.
func BenchmarkOfferSearchHTTP(b *testing.B) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, b.TempDir()+"/db")
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	svc := coord.New(coord.Config{Store: store, Passwords: plain{}})
	if _, err := svc.Signup(ctx, market.SignupRequest{Email: "r@example.com", Password: "password1"}); err != nil {
		b.Fatal(err)
	}
	host, err := svc.Signup(ctx, market.SignupRequest{Email: "h@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}})
	if err != nil {
		b.Fatal(err)
	}
	login, err := svc.Login(ctx, market.LoginRequest{Email: "r@example.com", Password: "password1"})
	if err != nil {
		b.Fatal(err)
	}
	const machines = 100_000
	models := []string{"NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA L40S"}
	vram := []int64{24564, 81920, 81559, 46068}
	rng := rand.New(rand.NewPCG(1, 2))
	err = store.Tx(ctx, func(tx coord.Tx) error {
		for i := range machines {
			k := rng.IntN(len(models))
			m := market.Machine{
				ID: market.MachineID(fmt.Sprintf("m-%08d", i)), Owner: host.ID, Listed: true, Online: true,
				PricePerGPUHour: market.Money(200_000 + rng.IntN(3_000_000)),
				Hardware: market.Hardware{Fingerprint: fmt.Sprint(i), Runner: "docker", CPUCores: 64, RAMMiB: 512 << 10, DiskGiB: 2000,
					Region: fmt.Sprintf("r%d", rng.IntN(10))},
				LastSeenAt: time.Now(), CreatedAt: time.Now(),
			}
			for g := range 8 {
				m.GPUs = append(m.GPUs, market.GPU{Index: g, UUID: fmt.Sprintf("GPU-%d-%d", i, g), Model: models[k], VRAMMiB: vram[k], MinPowerW: 100, MaxPowerW: 700})
			}
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
	srv := httptest.NewServer(httpapi.New(svc, httpapi.Options{}))
	defer srv.Close()
	target := srv.URL + "/api/v1/offers?limit=10&q=" + url.QueryEscape("gpu_name=H100 gpu_ram>=40 region in [r1,r2,r3] price_per_gpu_hour<2 num_gpus>=2")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	b.SetParallelism(4) // 4 x GOMAXPROCS clients
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			req, _ := http.NewRequest("GET", target, nil)
			req.Header.Set("Authorization", "Bearer "+login.Key.Secret)
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "searches/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
}

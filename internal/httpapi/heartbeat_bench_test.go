package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/httpapi"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

// BenchmarkHeartbeatHTTP measures bare agent heartbeats (an empty report
// of a machine known online) over HTTP on loopback, 10,000 machines, from
// 32 concurrent connections: the per-heartbeat cost of the whole path
// (HTTP, authentication, decoding, the in-memory liveness update), client
// included. Profile it with -cpuprofile to see the server's share.
func BenchmarkHeartbeatHTTP(b *testing.B) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, b.TempDir()+"/db")
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	svc := coord.New(coord.Config{Store: store, Passwords: plain{}})
	host, err := svc.Signup(ctx, market.SignupRequest{Email: "h@example.com", Password: "password1", Roles: []market.Role{market.RoleHost}})
	if err != nil {
		b.Fatal(err)
	}
	login, err := svc.Login(ctx, market.LoginRequest{Email: "h@example.com", Password: "password1"})
	if err != nil {
		b.Fatal(err)
	}
	const machines = 10_000
	ids := make([]market.MachineID, machines)
	err = store.Tx(ctx, func(tx coord.Tx) error {
		for i := range machines {
			ids[i] = market.MachineID(fmt.Sprintf("m-%08d", i))
			m := market.Machine{ID: ids[i], Owner: host.ID, Online: true, LastSeenAt: time.Now(), CreatedAt: time.Now(),
				Hardware: market.Hardware{Fingerprint: fmt.Sprint(i), Runner: "process", CPUCores: 8, RAMMiB: 1 << 15, DiskGiB: 100,
					GPUs: []market.GPU{{Index: 0, UUID: fmt.Sprintf("GPU-%d", i), Model: "NVIDIA GeForce RTX 4090", VRAMMiB: 24564, MinPowerW: 150, MaxPowerW: 450}}}}
			if err := tx.InsertMachine(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(svc, httpapi.Options{}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 32, MaxIdleConnsPerHost: 32}}
	beat := func(id market.MachineID) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/agent/v1/machines/"+string(id)+"/report", bytes.NewReader([]byte(`{"instances":[]}`)))
		req.Header.Set("Authorization", "Bearer "+login.Key.Secret)
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Errorf("heartbeat: %s", res.Status)
		}
	}
	for _, id := range ids { // the first report brings each machine into the live set
		beat(id)
	}
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			beat(ids[int(n.Add(1))%machines])
		}
	})
}

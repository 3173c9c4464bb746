package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/httpapi"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/sqlite"
)

type plain struct{}

func (plain) Hash(p string) (string, error) { return "p:" + p, nil }
func (plain) Verify(h, p string) bool       { return h == "p:"+p }

// newServer returns a test server and the API key of a renter.
func newServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	store, err := sqlite.Open(t.Context(), t.TempDir()+"/db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc := coord.New(coord.Config{Store: store, Passwords: plain{}})
	srv := httptest.NewServer(httpapi.New(svc, httpapi.Options{Registry: prometheus.NewRegistry()}))
	t.Cleanup(srv.Close)
	if _, err := svc.Signup(t.Context(), market.SignupRequest{Email: "r@example.com", Password: "password1"}); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Login(t.Context(), market.LoginRequest{Email: "r@example.com", Password: "password1"})
	if err != nil {
		t.Fatal(err)
	}
	return srv, res.Key.Secret
}

func do(t *testing.T, srv *httptest.Server, method, path, key, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestBadRequestsGetClearJSONErrors(t *testing.T) {
	srv, key := newServer(t)
	for _, tc := range []struct {
		name, method, path, key, body string
		status                        int
		code, msg                     string
	}{
		{"malformed JSON", "POST", "/api/v1/instances", key, `{"machine":`, 400, "invalid", "malformed JSON"},
		{"empty body", "POST", "/api/v1/instances", key, ``, 400, "invalid", "body is empty"},
		{"unknown field", "POST", "/api/v1/instances", key, `{"machine":"m-1","gpu":1}`, 400, "invalid", `unknown field "gpu"`},
		{"wrong type", "POST", "/api/v1/instances", key, `{"machine":"m-1","gpus":"two"}`, 400, "invalid", `field "gpus" must be int`},
		{"trailing data", "POST", "/api/v1/instances", key, `{"machine":"m-1"} {}`, 400, "invalid", "after the JSON object"},
		{"bad money", "PATCH", "/api/v1/machines/m-1", key, `{"price_per_gpu_hour":"1.2345678"}`, 400, "invalid", "more than 6 decimals"},
		{"no key", "GET", "/api/v1/wallet", "", ``, 401, "unauthorized", "missing API key"},
		{"not our key format", "GET", "/api/v1/wallet", "abc", ``, 401, "unauthorized", "not a gpumarket API key"},
		{"unknown key", "GET", "/api/v1/wallet", "gmk_nope", ``, 401, "unauthorized", "unknown API key"},
		{"unknown instance", "GET", "/api/v1/instances/i-nope", key, ``, 404, "not_found", "i-nope"},
		{"unknown route", "GET", "/api/v1/nope", key, ``, 404, "not_found", "no API endpoint GET /api/v1/nope"},
		{"bad query number", "GET", "/api/v1/offers?num_gpus=two", key, ``, 400, "invalid", "num_gpus"},
		{"bad query money", "GET", "/api/v1/offers?max_price=cheap", key, ``, 400, "invalid", "max_price"},
		{"create without an Idempotency-Key", "POST", "/api/v1/instances", key, `{"machine":"m-nope","gpus":1,"command":["x"]}`, 400, "invalid", "needs an Idempotency-Key header"},
		{"deposit as renter", "POST", "/api/v1/wallet/deposit", key, `{"email":"r@example.com","amount":"5"}`, 403, "forbidden", "admin role"},
		{"wrong password", "POST", "/api/v1/login", "", `{"email":"r@example.com","password":"nope-nope"}`, 401, "unauthorized", "wrong email or password"},
		{"instance metrics without key", "GET", "/api/v1/instances/i-1/metrics", "", ``, 401, "unauthorized", "missing API key"},
		{"metrics of an unknown instance", "GET", "/api/v1/instances/i-nope/metrics", key, ``, 404, "not_found", "i-nope"},
		{"metrics window too long", "GET", "/api/v1/instances/i-nope/metrics?window=48h", key, ``, 400, "invalid", "at most 24h0m0s"},
		{"metrics window not a duration", "GET", "/api/v1/machines/m-1/metrics?window=soon", key, ``, 400, "invalid", "like 1h"},
		{"machine metrics without key", "GET", "/api/v1/machines/m-1/metrics", "", ``, 401, "unauthorized", "missing API key"},
		{"metrics of a machine not yours", "GET", "/api/v1/machines/m-nope/metrics", key, ``, 404, "not_found", "not found"},
		{"verify without key", "POST", "/api/v1/machines/m-1/verify", "", ``, 401, "unauthorized", "missing API key"},
		{"verify a machine not yours", "POST", "/api/v1/machines/m-nope/verify", key, ``, 404, "not_found", "m-nope not found"},
		{"bond without key", "POST", "/api/v1/machines/m-1/bond", "", `{"per_gpu":"1"}`, 401, "unauthorized", "missing API key"},
		{"bond a machine not yours", "POST", "/api/v1/machines/m-nope/bond", key, `{"per_gpu":"1"}`, 404, "not_found", "m-nope not found"},
		{"negative bond", "POST", "/api/v1/machines/m-nope/bond", key, `{"per_gpu":"-1"}`, 400, "invalid", "must be between 0"},
		{"verification without key", "GET", "/api/v1/machines/m-1/verification", "", ``, 401, "unauthorized", "missing API key"},
		{"verification of an unknown machine", "GET", "/api/v1/machines/m-nope/verification", key, ``, 404, "not_found", "m-nope"},
		{"commit without key", "POST", "/agent/v1/machines/m-1/checks/v-1/commit", "", `{}`, 401, "unauthorized", "missing API key"},
		{"commit for a machine not yours", "POST", "/agent/v1/machines/m-nope/checks/v-1/commit", key, `{"roots":[]}`, 404, "not_found", "m-nope not found"},
		{"commit not JSON", "POST", "/agent/v1/machines/m-nope/checks/v-1/commit", key, `roots`, 400, "invalid", ""},
		{"proofs without key", "POST", "/agent/v1/machines/m-1/checks/v-1/proofs", "", `{}`, 401, "unauthorized", "missing API key"},
		{"proofs for a machine not yours", "POST", "/agent/v1/machines/m-nope/checks/v-1/proofs", key, `{"gpus":[]}`, 404, "not_found", "m-nope not found"},
		{"deployments without key", "GET", "/api/v1/deployments", "", ``, 401, "unauthorized", "missing API key"},
		{"delete deployment without key", "DELETE", "/api/v1/deployments/web", "", ``, 401, "unauthorized", "missing API key"},
		{"deployment not yours", "GET", "/api/v1/deployments/d-nope", key, ``, 404, "not_found", "not found among your deployments"},
		{"scale a deployment not yours", "POST", "/api/v1/deployments/web/scale", key, `{"replicas":2}`, 404, "not_found", "not found among your deployments"},
		{"bad deployment name", "POST", "/api/v1/deployments", key, `{"name":"Web","gpus_per_replica":1,"min_replicas":1,"max_replicas":1,"command":["x"]}`, 400, "invalid", "lower-case letters"},
		{"bad deployment latency", "PUT", "/api/v1/deployments", key, `{"name":"web","max_latency":"soon"}`, 400, "invalid", "like 80ms"},
		{"pools as renter", "GET", "/api/v1/admin/pools", key, ``, 403, "forbidden", "admin role"},
		{"set a pool as renter", "PUT", "/api/v1/admin/pools/depin", key, `{"share_bp":4500}`, 403, "forbidden", "admin role"},
		{"assign pools without key", "POST", "/api/v1/admin/pools/assign", "", `{"pool":"depin","machines":["m-1"]}`, 401, "unauthorized", "missing API key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := do(t, srv, tc.method, tc.path, tc.key, tc.body)
			if status != tc.status {
				t.Errorf("status = %d, want %d; body %s", status, tc.status, body)
			}
			var e httpapi.ErrorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body is not the JSON error shape: %q", body)
			}
			if e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("error = %+v, want code %q with %q", e.Error, tc.code, tc.msg)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if status == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

// TestCreateInstanceIdempotencyKey: a create, which holds money in
// escrow, takes an Idempotency-Key like every money call; its answer,
// an error included, is replayed for the same key and body.
func TestCreateInstanceIdempotencyKey(t *testing.T) {
	srv, key := newServer(t)
	post := func(idem, body string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/api/v1/instances", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Idempotency-Key", idem)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	body := `{"machine":"m-nope","gpus":1,"command":["x"]}`
	for i := range 2 {
		if status, got := post("k-1", body); status != 404 || !strings.Contains(got, "m-nope not found") {
			t.Errorf("call %d: %d %s; want 404 not found", i, status, got)
		}
	}
	if status, got := post("k-1", `{"machine":"m-other","gpus":1,"command":["x"]}`); status != 409 || !strings.Contains(got, "use a new key") {
		t.Errorf("key reused for another body: %d %s; want 409", status, got)
	}
	if status, got := post(strings.Repeat("k", 201), body); status != 400 || !strings.Contains(got, "at most 200") {
		t.Errorf("long key: %d %s; want 400", status, got)
	}
}

func TestStatusOfEveryKind(t *testing.T) {
	want := map[market.Kind]int{
		market.NotFound: 404, market.Invalid: 400, market.Conflict: 409, market.Unauthorized: 401,
		market.Forbidden: 403, market.InsufficientFunds: 402, market.Unavailable: 503, market.Internal: 500, market.KindOther: 500,
	}
	for k, code := range want {
		if got := httpapi.Status(k); got != code {
			t.Errorf("Status(%v) = %d, want %d", k, got, code)
		}
	}
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	srv, _ := newServer(t)
	status, _, body := do(t, srv, "GET", "/api/v1/openapi.json", "", "")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	// Every route the server answers must be described: probe each
	// described path and method, and a few known ones that must be there.
	for _, want := range []string{"POST /api/v1/instances", "GET /api/v1/instances/{id}/logs", "POST /agent/v1/machines/{id}/report", "POST /api/v1/wallet/deposit", "DELETE /api/v1/keys/{id}"} {
		method, path, _ := strings.Cut(want, " ")
		if doc.Paths[path][strings.ToLower(method)] == nil {
			t.Errorf("%s is not described", want)
		}
	}
	n := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			n++
			probe := strings.NewReplacer("{id}", "x").Replace(path)
			status, _, body := do(t, srv, strings.ToUpper(method), probe, "", "")
			if status == 404 && strings.Contains(body, "no API endpoint") {
				t.Errorf("%s %s is described but not served", method, path)
			}
		}
	}
	if n < 25 {
		t.Errorf("only %d operations described", n)
	}
	// Every call that moves money says it needs the header.
	for _, want := range []string{"POST /api/v1/instances", "POST /api/v1/wallet/deposit", "POST /api/v1/wallet/withdraw", "POST /api/v1/stake/add"} {
		method, path, _ := strings.Cut(want, " ")
		params, _ := doc.Paths[path][strings.ToLower(method)]["parameters"].([]any)
		found := false
		for _, p := range params {
			if p, _ := p.(map[string]any); p["name"] == "Idempotency-Key" && p["in"] == "header" && p["required"] == true {
				found = true
			}
		}
		if !found {
			t.Errorf("%s does not describe its required Idempotency-Key header: %v", want, params)
		}
	}
	if _, ok := doc.Components.Schemas["CreateInstanceRequest"].Properties["gpus"]; !ok {
		t.Errorf("CreateInstanceRequest schema lacks gpus: %+v", doc.Components.Schemas["CreateInstanceRequest"])
	}
	if _, ok := doc.Components.Schemas["Machine"].Properties["gpus"]; !ok {
		t.Error("Machine schema lacks the embedded Hardware fields")
	}
}

func TestHealthAndMetrics(t *testing.T) {
	srv, key := newServer(t)
	if status, _, body := do(t, srv, "GET", "/healthz", "", ""); status != 200 || !strings.Contains(body, "ok") {
		t.Errorf("healthz: %d %s", status, body)
	}
	do(t, srv, "GET", "/api/v1/wallet", key, "")
	status, _, body := do(t, srv, "GET", "/metrics", "", "")
	if status != 200 || !strings.Contains(body, `gpumarket_http_requests_total{code="2xx",route="GET /api/v1/wallet"} 1`) {
		t.Errorf("metrics: %d, missing the wallet request counter:\n%s", status, body)
	}
}

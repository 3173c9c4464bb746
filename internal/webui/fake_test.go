package webui

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// fakeService keeps accounts, keys, one machine's worth of offers,
// instances and wallets in memory, with the coordinator's rules that the
// pages depend on (who sees what, escrow, error kinds).
type fakeService struct {
	mu        sync.Mutex
	accounts  map[string]market.Account // by email
	passwords map[string]string
	keys      map[string]market.APIKey // by secret
	machines  map[market.MachineID]market.Machine
	instances map[market.InstanceID]market.Instance
	logs      map[market.InstanceID][]market.LogChunk
	wallets   map[market.AccountID]market.Wallet
	created   map[string]keyedCreate // by caller and idempotency key
	faucet    bool
	broken    error // returned by every call when set: a store failure
	n         int
	extra     *moreFake
}

var _ Service = (*fakeService)(nil)

func newFake() *fakeService {
	return &fakeService{
		accounts: map[string]market.Account{}, passwords: map[string]string{}, keys: map[string]market.APIKey{},
		machines: map[market.MachineID]market.Machine{}, instances: map[market.InstanceID]market.Instance{},
		logs: map[market.InstanceID][]market.LogChunk{}, wallets: map[market.AccountID]market.Wallet{},
		created: map[string]keyedCreate{},
	}
}

func (f *fakeService) id(prefix string) string {
	f.n++
	return prefix + strings.Repeat("0", 3) + string(rune('a'+f.n%26)) + string(rune('a'+f.n/26%26))
}

func (f *fakeService) Signup(ctx context.Context, req market.SignupRequest) (market.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return market.Account{}, f.broken
	}
	if _, ok := f.accounts[req.Email]; ok {
		return market.Account{}, market.Errorf("sign up", market.Conflict, "an account with email %s exists already; log in instead", req.Email)
	}
	a := market.Account{ID: market.AccountID(f.id("a-")), Email: req.Email, Roles: req.Roles}
	f.accounts[req.Email], f.passwords[req.Email] = a, req.Password
	return a, nil
}

func (f *fakeService) Login(ctx context.Context, req market.LoginRequest) (market.LoginResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return market.LoginResult{}, f.broken
	}
	a, ok := f.accounts[req.Email]
	if !ok || f.passwords[req.Email] != req.Password {
		return market.LoginResult{}, market.Errorf("log in", market.Unauthorized, "wrong email or password")
	}
	secret := coord.KeyPrefix + f.id("secret")
	k := market.APIKey{ID: market.APIKeyID(f.id("k-")), Owner: a.ID, Name: req.KeyName, Prefix: secret[:len(coord.KeyPrefix)+6]}
	f.keys[secret] = k
	return market.LoginResult{Account: a, Key: market.NewAPIKey{APIKey: k, Secret: secret}}, nil
}

func (f *fakeService) account(id market.AccountID) market.Account {
	for _, a := range f.accounts {
		if a.ID == id {
			return a
		}
	}
	return market.Account{}
}

func (f *fakeService) Authenticate(ctx context.Context, secret string) (market.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return market.Account{}, f.broken
	}
	k, ok := f.keys[secret]
	if !ok || k.RevokedAt != nil {
		return market.Account{}, market.Errorf("authenticate", market.Unauthorized, "unknown API key")
	}
	return f.account(k.Owner), nil
}

func (f *fakeService) Keys(ctx context.Context, caller market.Account) ([]market.APIKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ks []market.APIKey
	for _, k := range f.keys {
		if k.Owner == caller.ID {
			ks = append(ks, k)
		}
	}
	return ks, f.broken
}

func (f *fakeService) RevokeKey(ctx context.Context, caller market.Account, id market.APIKeyID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, k := range f.keys {
		if k.ID == id && k.Owner == caller.ID {
			k.RevokedAt = new(time.Now())
			f.keys[s] = k
			return nil
		}
	}
	return market.Errorf("revoke key", market.NotFound, "key %s not found", id)
}

func (f *fakeService) Offers(ctx context.Context, of market.OfferFilter) ([]market.Offer, error) {
	if _, err := match.Parse(of.Query); err != nil {
		return nil, err
	}
	if _, err := match.ParseSort(of.Sort); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return nil, f.broken
	}
	var out []market.Offer
	for _, m := range f.machines {
		if !m.Listed || (of.Query != "" && !strings.Contains(of.Query, "RTX_4090")) {
			continue
		}
		out = append(out, market.Offer{Machine: m.ID, GPUModel: m.GPUs[0].Model, FreeGPUs: len(m.FreeGPUs()), TotalGPUs: len(m.GPUs), PricePerGPUHour: m.PricePerGPUHour, Runner: m.Runner})
	}
	return out, nil
}

func (f *fakeService) ExplainOffers(ctx context.Context, of market.OfferFilter) (match.Explanation, error) {
	return match.Explanation{Machines: len(f.machines), Available: len(f.machines), Steps: []match.Step{{Filter: of.Query, Removed: 1, Fails: 1}}, EmptiedBy: 0}, nil
}

func (f *fakeService) Machine(ctx context.Context, caller market.Account, id market.MachineID) (market.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.machines[id]
	if !ok || (!m.Listed && m.Owner != caller.ID) {
		return market.Machine{}, market.Errorf("show machine", market.NotFound, "machine %s not found", id)
	}
	return m, f.broken
}

// keyedCreate is a create made under an idempotency key: what was asked
// and the instance it made.
type keyedCreate struct {
	req  market.CreateInstanceRequest
	inst market.InstanceID
}

// CreateInstanceOnce keeps the coordinator's rules for keys: a repeat
// with the same request returns the first instance, another request is
// refused with Conflict.
func (f *fakeService) CreateInstanceOnce(ctx context.Context, caller market.Account, key string, req market.CreateInstanceRequest) (market.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key == "" {
		return market.Instance{}, market.Errorf("create instance", market.Invalid, "this call moves money and needs an Idempotency-Key header")
	}
	if c, ok := f.created[string(caller.ID)+"\n"+key]; ok {
		if !reflect.DeepEqual(c.req, req) {
			return market.Instance{}, market.Errorf("create instance", market.Conflict, "idempotency key %q was used for a different create instance request; use a new key for a new request", key)
		}
		return f.instances[c.inst], nil
	}
	inst, err := f.createInstance(caller, req)
	if err == nil {
		f.created[string(caller.ID)+"\n"+key] = keyedCreate{req: req, inst: inst.ID}
	}
	return inst, err
}

func (f *fakeService) createInstance(caller market.Account, req market.CreateInstanceRequest) (market.Instance, error) {
	if !caller.Has(market.RoleRenter) {
		return market.Instance{}, market.Errorf("create instance", market.Forbidden, "this needs the renter role")
	}
	m := f.machines[req.Machine]
	price := m.PricePerGPUHour * market.Money(req.GPUs)
	w := f.wallets[caller.ID]
	if w.Available < price {
		return market.Instance{}, market.Errorf("create instance", market.InsufficientFunds, "renting %d GPUs holds %s in escrow, but you have %s available", req.GPUs, price, w.Available)
	}
	w.Available -= price
	w.Escrow += price
	f.wallets[caller.ID] = w
	inst := market.Instance{ID: market.InstanceID(f.id("i-")), Renter: caller.ID, Machine: m.ID, GPUs: []int{0}, Command: req.Command, Env: req.Env, Image: req.Image,
		Template: req.Template, Ports: req.Ports, SSHKeys: req.SSHKeys, State: market.InstancePending, PricePerHour: price, Escrow: price}
	f.instances[inst.ID] = inst
	return inst, nil
}

func (f *fakeService) Instances(ctx context.Context, caller market.Account, all bool) ([]market.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []market.Instance
	for _, i := range f.instances {
		if i.Renter == caller.ID {
			out = append(out, i)
		}
	}
	return out, f.broken
}

func (f *fakeService) own(caller market.Account, id market.InstanceID) (market.Instance, error) {
	i, ok := f.instances[id]
	if !ok || i.Renter != caller.ID {
		return market.Instance{}, market.Errorf("show instance", market.NotFound, "instance %s not found among your instances", id)
	}
	return i, f.broken
}

func (f *fakeService) Instance(ctx context.Context, caller market.Account, id market.InstanceID) (market.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.own(caller, id)
}

func (f *fakeService) StopInstance(ctx context.Context, caller market.Account, id market.InstanceID) (market.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.own(caller, id)
	if err != nil {
		return i, err
	}
	i.State = market.InstanceStopped
	f.instances[id] = i
	return i, nil
}

func (f *fakeService) Logs(ctx context.Context, caller market.Account, id market.InstanceID, after int64, limit int, wait time.Duration) ([]market.LogChunk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.own(caller, id); err != nil {
		return nil, err
	}
	var out []market.LogChunk
	for _, c := range f.logs[id] {
		if c.Seq > after {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeService) Events(ctx context.Context, caller market.Account, ef coord.EventFilter) ([]market.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.own(caller, ef.Instance); err != nil {
		return nil, err
	}
	return []market.Event{{Type: "instance.created", Instance: ef.Instance, Message: "created <b>here</b>"}}, nil
}

func (f *fakeService) Wallet(ctx context.Context, caller market.Account) (market.Wallet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.wallets[caller.ID]
	w.Account, w.Asset = caller.ID, market.DefaultAsset
	return w, f.broken
}

func (f *fakeService) History(ctx context.Context, caller market.Account, before int64, limit int) ([]market.HistoryEntry, error) {
	return nil, nil
}

func (f *fakeService) Faucet(ctx context.Context, caller market.Account) (market.Wallet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.faucet {
		return market.Wallet{}, market.Errorf("faucet", market.Forbidden, "the faucet exists only in `gpumarket dev`; ask an admin for a deposit")
	}
	w := f.wallets[caller.ID]
	w.Available += market.Tokens(100)
	f.wallets[caller.ID] = w
	return w, nil
}

func (f *fakeService) Machines(ctx context.Context, caller market.Account, all bool) ([]market.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []market.Machine
	if all && !caller.Has(market.RoleAdmin) {
		return nil, market.Errorf("list all machines", market.Forbidden, "this needs the admin role")
	}
	for _, m := range f.machines {
		if all || m.Owner == caller.ID {
			out = append(out, m)
		}
	}
	return out, f.broken
}

func (f *fakeService) ownMachine(caller market.Account, id market.MachineID) (market.Machine, error) {
	m, ok := f.machines[id]
	if !ok || m.Owner != caller.ID {
		return m, market.Errorf("update machine", market.NotFound, "machine %s not found among your machines", id)
	}
	return m, nil
}

func (f *fakeService) UpdateMachine(ctx context.Context, caller market.Account, id market.MachineID, u market.MachineUpdate) (market.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.ownMachine(caller, id)
	if err != nil {
		return m, err
	}
	if *u.PricePerGPUHour > market.Tokens(1_000_000) {
		return m, market.Errorf("update machine", market.Invalid, "price per GPU-hour %s is above the limit of 1000000 tokens", *u.PricePerGPUHour)
	}
	m.PricePerGPUHour = *u.PricePerGPUHour
	f.machines[id] = m
	return m, nil
}

func (f *fakeService) SetListed(ctx context.Context, caller market.Account, id market.MachineID, listed bool) (market.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.ownMachine(caller, id)
	if err != nil {
		return m, err
	}
	if listed && m.PricePerGPUHour <= 0 {
		return m, market.Errorf("list machine", market.Invalid, "set a price first")
	}
	m.Listed = listed
	m.DeriveStatus()
	f.machines[id] = m
	return m, nil
}

func (f *fakeService) Earnings(ctx context.Context, caller market.Account) (market.EarningsReport, error) {
	return market.EarningsReport{Account: caller.ID, Asset: market.DefaultAsset, Total: market.Tokens(3)}, f.broken
}

func (f *fakeService) InstanceMetrics(ctx context.Context, caller market.Account, id market.InstanceID, window time.Duration) (market.MetricsReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, err := f.own(caller, id)
	if err != nil {
		return market.MetricsReport{}, err
	}
	to := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := market.MetricsReport{Machine: inst.Machine, Instance: id, From: to.Add(-window), To: to, StepSeconds: 10}
	for _, g := range inst.GPUs {
		s := market.GPUSeries{Index: g}
		for i := range 6 {
			s.Points = append(s.Points, market.MetricPoint{At: to.Add(time.Duration(i-6) * 10 * time.Second), UtilPct: float64(10 * i), MemUsedMiB: 2048, PowerW: 300, TempC: 60})
		}
		r.GPUs = append(r.GPUs, s)
		if inst.Active() {
			r.Latest = append(r.Latest, market.GPUSample{Index: g, At: to, UtilPct: 50, MemUsedMiB: 2048, PowerW: 300, TempC: 60, PowerLimitW: 450})
		}
	}
	return r, nil
}

func (f *fakeService) MachineMetrics(ctx context.Context, caller market.Account, id market.MachineID, window time.Duration) (market.MetricsReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.ownMachine(caller, id); err != nil {
		return market.MetricsReport{}, err
	}
	to := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	return market.MetricsReport{Machine: id, From: to.Add(-window), To: to, StepSeconds: 10}, nil
}

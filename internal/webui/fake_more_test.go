package webui

import (
	"context"
	"time"

	"github.com/gpumarket/gpumarket/internal/auction"
	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// moreFake holds the fake's spot book, withdrawals and stakes.
type moreFake struct {
	bids        []market.Bid
	rounds      []coord.AuctionRound
	withdrawals map[market.WithdrawalID]market.Withdrawal
	stakes      map[market.AccountID]market.Money
	statements  []market.DividendStatement
	revenue     []market.DayRevenue // what Revenue returns, whatever the days
	revenueErr  error               // returned by Revenue when set
	ledgerBad   bool
	machinesAll []market.Machine // what an admin lists; nil: f.machines
	idem        map[string]bool
}

func (f *fakeService) more() *moreFake {
	if f.extra == nil {
		f.extra = &moreFake{withdrawals: map[market.WithdrawalID]market.Withdrawal{}, stakes: map[market.AccountID]market.Money{}, idem: map[string]bool{}}
	}
	return f.extra
}

func needAdmin(caller market.Account, op string) error {
	if !caller.Has(market.RoleAdmin) {
		return market.Errorf(op, market.Forbidden, "this needs the admin role")
	}
	return nil
}

func (f *fakeService) CreateKey(ctx context.Context, caller market.Account, name string) (market.NewAPIKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken != nil {
		return market.NewAPIKey{}, f.broken
	}
	if name == "taken" {
		return market.NewAPIKey{}, market.Errorf("create key", market.Conflict, "you have a key named %q already", name)
	}
	secret := coord.KeyPrefix + f.id("secret")
	k := market.APIKey{ID: market.APIKeyID(f.id("k-")), Owner: caller.ID, Name: name, Prefix: secret[:len(coord.KeyPrefix)+6]}
	f.keys[secret] = k
	return market.NewAPIKey{APIKey: k, Secret: secret}, nil
}

func (f *fakeService) Bids(ctx context.Context, caller market.Account) ([]market.Bid, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []market.Bid
	for _, b := range f.more().bids {
		if b.Bidder == caller.ID {
			out = append(out, b)
		}
	}
	return out, f.broken
}

func (f *fakeService) Snapshot(ctx context.Context) (market.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	snap := market.Snapshot{At: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), Interval: time.Minute}
	for _, m := range f.machines {
		if !m.Listed {
			continue
		}
		sm := market.SnapshotMachine{Machine: m.ID, GPUModel: m.GPUs[0].Model, TotalGPUs: len(m.GPUs), SpotGPUs: len(m.FreeGPUs()), Terms: m.Spot, MinPowerW: 150, MaxPowerW: 450}
		for _, b := range f.more().bids {
			if b.Machine == m.ID {
				sm.Bids = append(sm.Bids, market.SnapshotBid{Seq: b.Seq, GPUs: b.GPUs, PricePerGPUDay: b.PricePerGPUDay, PowerLimitW: b.PowerLimitW, State: b.State})
			}
		}
		snap.Machines = append(snap.Machines, sm)
	}
	return snap, f.broken
}

func (f *fakeService) Rounds(ctx context.Context, rf coord.RoundFilter) ([]coord.AuctionRound, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []coord.AuctionRound
	for _, r := range f.more().rounds {
		if rf.Machine == "" || r.Machine == rf.Machine {
			out = append(out, r)
		}
	}
	return out, f.broken
}

func (f *fakeService) Withdraw(ctx context.Context, caller market.Account, key string, req market.WithdrawRequest) (market.Withdrawal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key == "" {
		return market.Withdrawal{}, market.Errorf("withdraw", market.Invalid, "an idempotency key is needed")
	}
	w := f.wallets[caller.ID]
	if req.Amount < market.Tokens(1) {
		return market.Withdrawal{}, market.Errorf("withdraw", market.Invalid, "the smallest withdrawal is 1.00 tokens; you asked for %s", req.Amount)
	}
	if req.Amount > w.Earnings {
		return market.Withdrawal{}, market.Errorf("withdraw", market.InsufficientFunds, "you can withdraw %s now; you asked for %s", w.Earnings, req.Amount)
	}
	w.Earnings -= req.Amount
	f.wallets[caller.ID] = w
	wd := market.Withdrawal{ID: market.WithdrawalID(f.id("w-")), Account: caller.ID, Amount: req.Amount, State: market.WithdrawalPending, Asset: market.DefaultAsset}
	f.more().withdrawals[wd.ID] = wd
	return wd, nil
}

func (f *fakeService) Withdrawals(ctx context.Context, caller market.Account, all bool, state market.WithdrawalState) ([]market.Withdrawal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if all {
		if err := needAdmin(caller, "list withdrawals"); err != nil {
			return nil, err
		}
	}
	var out []market.Withdrawal
	for _, w := range f.more().withdrawals {
		if (all || w.Account == caller.ID) && (state == "" || w.State == state) {
			out = append(out, w)
		}
	}
	return out, f.broken
}

func (f *fakeService) decide(caller market.Account, key string, id market.WithdrawalID, to market.WithdrawalState, reason string) (market.Withdrawal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := needAdmin(caller, "decide withdrawal"); err != nil {
		return market.Withdrawal{}, err
	}
	if to == market.WithdrawalRejected && reason == "" {
		return market.Withdrawal{}, market.Errorf("reject withdrawal", market.Invalid, "say why the withdrawal is rejected; the host sees it")
	}
	w, ok := f.more().withdrawals[id]
	if !ok {
		return w, market.Errorf("decide withdrawal", market.NotFound, "withdrawal %s not found", id)
	}
	if w.State != market.WithdrawalPending {
		return w, market.Errorf("decide withdrawal", market.Conflict, "withdrawal %s is %s already", id, w.State)
	}
	w.State, w.Reason = to, reason
	f.more().withdrawals[id] = w
	return w, nil
}

func (f *fakeService) CompleteWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID) (market.Withdrawal, error) {
	return f.decide(caller, key, id, market.WithdrawalCompleted, "")
}

func (f *fakeService) RejectWithdrawal(ctx context.Context, caller market.Account, key string, id market.WithdrawalID, reason string) (market.Withdrawal, error) {
	return f.decide(caller, key, id, market.WithdrawalRejected, reason)
}

func (f *fakeService) Stake(ctx context.Context, caller market.Account) (market.StakeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var total market.Money
	for _, v := range f.more().stakes {
		total += v
	}
	return market.StakeInfo{Account: caller.ID, Asset: market.DefaultAsset, Staked: f.more().stakes[caller.ID], TotalStaked: total}, f.broken
}

func (f *fakeService) AddStake(ctx context.Context, caller market.Account, key string, req market.StakeRequest) (market.StakeInfo, error) {
	f.mu.Lock()
	if req.Amount <= 0 {
		f.mu.Unlock()
		return market.StakeInfo{}, market.Errorf("stake", market.Invalid, "stake an amount above zero, not %s", req.Amount)
	}
	w := f.wallets[caller.ID]
	if w.Available < req.Amount {
		f.mu.Unlock()
		return market.StakeInfo{}, market.Errorf("stake", market.InsufficientFunds, "you have %s available; you asked to stake %s", w.Available, req.Amount)
	}
	if !f.more().idem[key] {
		f.more().idem[key] = true
		w.Available -= req.Amount
		f.wallets[caller.ID] = w
		f.more().stakes[caller.ID] += req.Amount
	}
	f.mu.Unlock()
	return f.Stake(ctx, caller)
}

func (f *fakeService) RemoveStake(ctx context.Context, caller market.Account, key string, req market.StakeRequest) (market.Unstake, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Amount <= 0 || req.Amount > f.more().stakes[caller.ID] {
		return market.Unstake{}, market.Errorf("unstake", market.Invalid, "you have %s staked; you asked to unstake %s", f.more().stakes[caller.ID], req.Amount)
	}
	f.more().stakes[caller.ID] -= req.Amount
	return market.Unstake{ID: "u-1", Account: caller.ID, Amount: req.Amount}, nil
}

func (f *fakeService) Statements(ctx context.Context, period int64, limit int) ([]market.DividendStatement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.more().statements, f.broken
}

func (f *fakeService) Revenue(ctx context.Context, caller market.Account, days int) ([]market.DayRevenue, error) {
	if err := needAdmin(caller, "show revenue"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.more().revenueErr != nil {
		return nil, f.more().revenueErr
	}
	return f.more().revenue, f.broken
}

func (f *fakeService) LedgerCheck(ctx context.Context, caller market.Account) (market.LedgerReport, error) {
	if err := needAdmin(caller, "check ledger"); err != nil {
		return market.LedgerReport{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r := market.LedgerReport{OK: !f.more().ledgerBad, Transfers: 42, Checks: []market.LedgerCheck{{Name: "every asset sums to zero", OK: true}}}
	if f.more().ledgerBad {
		r.Checks = append(r.Checks, market.LedgerCheck{Name: "no user account negative", Details: []string{"user:a-1:available is -1.00 <b>"}})
	}
	return r, nil
}

// round is a stored auction round on m in which bid b won.
func fakeRound(m market.MachineID, host market.AccountID, b market.Bid) coord.AuctionRound {
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	terms := market.SpotTerms{ReservePerGPUDay: market.Tokens(1), EnergyPerKWh: market.Money(200_000), MaxPowerW: 450}
	profit, _ := auction.Profit(b.PricePerGPUDay, terms.EnergyPerKWh, b.PowerLimitW, b.GPUs, time.Minute)
	return coord.AuctionRound{ID: "r-1", Seq: 1, Machine: m, At: at,
		Input: auction.Round{At: at, Interval: time.Minute, Machines: []auction.Machine{{ID: m, Owner: host, Free: 2, Terms: terms,
			Cards: []auction.Card{{MinPowerW: 150, MaxPowerW: 450}, {MinPowerW: 150, MaxPowerW: 450}}, Bids: []auction.Entry{{Bid: b, Balance: market.Tokens(10)}}}}},
		Decision: auction.Decision{Machines: []auction.MachineDecision{{Machine: m, Free: 2,
			Candidates: []auction.Candidate{{Bid: b.ID, Seq: b.Seq, GPUs: b.GPUs, Profit: profit}},
			Winners:    []auction.Winner{{Bid: b.ID, Bidder: b.Bidder, GPUs: b.GPUs, Profit: profit}}, Profit: profit, BestProfit: profit, Incumbency: auction.NoIncumbents}}},
	}
}

func (f *fakeService) Statement(ctx context.Context, caller market.Account, month string) (market.WalletStatement, error) {
	from, err := time.Parse("2006-01", month)
	if err != nil {
		return market.WalletStatement{}, market.Errorf("statement", market.Invalid, "month %q: write it as YYYY-MM, like 2026-11", month)
	}
	return market.WalletStatement{Account: caller.ID, Month: month, From: from, To: from.AddDate(0, 1, 0),
		Balances: []market.StatementBalance{{Asset: market.DefaultAsset, Account: market.LedgerAccount("user:" + string(caller.ID) + ":available"), Opening: 0, In: market.Tokens(10), Out: market.Money(250_000), Closing: market.Money(9_750_000)}},
		Lines: []market.StatementLine{
			{Seq: 1, At: from.Add(time.Hour), Kind: "deposit", Asset: market.DefaultAsset, Amount: market.Tokens(10), Reason: "=HYPERLINK(\"x\")"},
			{Seq: 2, At: from.Add(2 * time.Hour), Kind: "charge", Asset: market.DefaultAsset, Amount: -market.Money(250_000), Instance: "i-1", FromMinute: 100, ToMinute: 130},
		}}, f.broken
}

func (f *fakeService) MachineVerification(ctx context.Context, caller market.Account, id market.MachineID) (market.MachineVerification, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.ownMachine(caller, id); err != nil {
		return market.MachineVerification{}, err
	}
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	return market.MachineVerification{Machine: id, Verified: true,
		Checks:      []market.Check{{ID: "v-1", Machine: id, Cause: market.CheckOnRegister, State: market.CheckFailed, Failure: "GPU 1 answered <late>", CreatedAt: at}},
		Reliability: market.Reliability{Score: 0.9731, Coverage: 0.99, FaultFactor: 0.98, ListedSecs: 36000, OnlineSecs: 35640, Completed: 49, HostFaults: 1, Formula: "coverage x fault_factor"},
		PerfScore:   17.42}, nil
}

func (f *fakeService) Fleet(ctx context.Context, caller market.Account) ([]market.Machine, error) {
	return f.Machines(ctx, caller, true)
}

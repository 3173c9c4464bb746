package httpapi

import (
	"net/http"
	"strconv"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// route is one API endpoint. The table below is the single source of the
// mux and of the OpenAPI description.
type route struct {
	Method, Path, Summary string
	Auth                  bool
	Idem                  bool // moves money: needs an Idempotency-Key header
	Status                int  // success status; 0 = 200
	Req, Resp             any  // samples of the body types, for OpenAPI
	Query                 []param
	Handle                func(s *Server, c *call) (any, error)
}

type param struct{ Name, Type, Doc string }

var offerParams = []param{
	{"q", "string", "a query such as: gpu_name=RTX_4090 num_gpus>=2 price_per_gpu_hour<0.8 region in [eu,us] (fields: /api/v1/offers/fields)"},
	{"sort", "string", "score (default), price, or a numeric field; - for largest first"},
	{"limit", "integer", "at most this many offers (50, max 1000)"},
	{"region", "string", "your region, for the latency part of the score"},
	{"gpu_name", "string", "shorthand for gpu_name=..."},
	{"num_gpus", "integer", "shorthand for num_gpus>=..."},
	{"max_price", "string", "shorthand for price_per_gpu_hour<=..., in tokens"},
	{"min_gpu_ram_gb", "integer", "shorthand for gpu_ram>=..., GB"},
}

func offerFilter(c *call) (market.OfferFilter, error) {
	q := c.r.URL.Query()
	f := market.OfferFilter{Query: q.Get("q"), Sort: q.Get("sort"), Region: q.Get("region"), GPUName: q.Get("gpu_name")}
	n, err := c.queryInt("num_gpus", 0)
	if err != nil {
		return f, err
	}
	f.MinGPUs = int(n)
	if f.MinGPURAMGB, err = c.queryInt("min_gpu_ram_gb", 0); err != nil {
		return f, err
	}
	limit, err := c.queryInt("limit", 0)
	if err != nil {
		return f, err
	}
	f.Limit = int(limit)
	f.MaxPrice, err = parseMoneyQuery(c, "max_price")
	return f, err
}

var metricsParams = []param{{"window", "string", "how far back, like 15m, 1h (default) or 24h; up to 1h at 10 s steps, up to 24h at 5 min steps"}}

var routes = []route{
	{Method: "POST", Path: "/api/v1/signup", Summary: "Create an account (roles renter and/or host)", Status: http.StatusCreated,
		Req: market.SignupRequest{}, Resp: market.Account{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.SignupRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.Signup(c.ctx(), req)
		}},
	{Method: "POST", Path: "/api/v1/login", Summary: "Exchange email and password for a new API key",
		Req: market.LoginRequest{}, Resp: market.LoginResult{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.LoginRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.Login(c.ctx(), req)
		}},
	{Method: "GET", Path: "/api/v1/me", Summary: "The calling account", Auth: true, Resp: market.Account{},
		Handle: func(s *Server, c *call) (any, error) { return c.caller, nil }},
	{Method: "GET", Path: "/api/v1/keys", Summary: "List your API keys", Auth: true, Resp: []market.APIKey{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Keys(c.ctx(), c.caller) }},
	{Method: "POST", Path: "/api/v1/keys", Summary: "Create an API key; the secret is shown once", Auth: true, Status: http.StatusCreated,
		Req: market.CreateKeyRequest{}, Resp: market.NewAPIKey{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.CreateKeyRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.CreateKey(c.ctx(), c.caller, req.Name)
		}},
	{Method: "DELETE", Path: "/api/v1/keys/{id}", Summary: "Revoke one of your API keys", Auth: true, Status: http.StatusNoContent,
		Handle: func(s *Server, c *call) (any, error) {
			return nil, s.svc.RevokeKey(c.ctx(), c.caller, market.APIKeyID(c.pathID("id")))
		}},

	{Method: "GET", Path: "/api/v1/machines", Summary: "List your machines (admins: all=1 for every machine)", Auth: true, Resp: []market.Machine{},
		Query: []param{{"all", "boolean", "admins only: every machine"}},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Machines(c.ctx(), c.caller, c.r.URL.Query().Get("all") != "")
		}},
	{Method: "GET", Path: "/api/v1/machines/{id}", Summary: "Show a machine", Auth: true, Resp: market.Machine{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Machine(c.ctx(), c.caller, market.MachineID(c.pathID("id")))
		}},
	{Method: "PATCH", Path: "/api/v1/machines/{id}", Summary: "Change your machine's price and location", Auth: true,
		Req: market.MachineUpdate{}, Resp: market.Machine{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.MachineUpdate
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.UpdateMachine(c.ctx(), c.caller, market.MachineID(c.pathID("id")), req)
		}},
	{Method: "POST", Path: "/api/v1/machines/{id}/list", Summary: "List your machine for rent", Auth: true, Resp: market.Machine{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.SetListed(c.ctx(), c.caller, market.MachineID(c.pathID("id")), true)
		}},
	{Method: "POST", Path: "/api/v1/machines/{id}/unlist", Summary: "Take your machine off the market", Auth: true, Resp: market.Machine{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.SetListed(c.ctx(), c.caller, market.MachineID(c.pathID("id")), false)
		}},

	{Method: "POST", Path: "/api/v1/machines/{id}/verify", Summary: "Ask for a verification check of your machine now (or get the pending one)", Auth: true, Resp: market.Check{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.RequestCheck(c.ctx(), c.caller, market.MachineID(c.pathID("id")))
		}},
	{Method: "POST", Path: "/api/v1/machines/{id}/bond", Summary: "Set your machine's bond per GPU (ranks it higher; slashed to renters on failed checks and downtime)", Auth: true,
		Req: market.BondRequest{}, Resp: market.Bond{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.BondRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.SetBond(c.ctx(), c.caller, market.MachineID(c.pathID("id")), req)
		}},
	{Method: "GET", Path: "/api/v1/machines/{id}/verification", Summary: "A machine's verification checks with their evidence, and its reliability score with the formula's terms", Auth: true, Resp: market.MachineVerification{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.MachineVerification(c.ctx(), c.caller, market.MachineID(c.pathID("id")))
		}},

	{Method: "GET", Path: "/api/v1/offers", Summary: "Search rentable machines with the offer query language, best first", Auth: true, Resp: []market.Offer{},
		Query: offerParams,
		Handle: func(s *Server, c *call) (any, error) {
			f, err := offerFilter(c)
			if err != nil {
				return nil, err
			}
			return s.svc.Offers(c.ctx(), f)
		}},
	{Method: "GET", Path: "/api/v1/offers/explain", Summary: "Say how many machines each filter of a search removed, and what nearly matched", Auth: true, Resp: match.Explanation{},
		Query: offerParams,
		Handle: func(s *Server, c *call) (any, error) {
			f, err := offerFilter(c)
			if err != nil {
				return nil, err
			}
			return s.svc.ExplainOffers(c.ctx(), f)
		}},
	{Method: "GET", Path: "/api/v1/offers/fields", Summary: "The fields of the offer query language, with types and units", Resp: []match.Field{},
		Handle: func(s *Server, c *call) (any, error) { return match.Fields(), nil }},

	{Method: "POST", Path: "/api/v1/instances", Summary: "Rent GPUs of a machine on demand; one hour is held in escrow (needs an Idempotency-Key header)", Auth: true, Idem: true, Status: http.StatusCreated,
		Req: market.CreateInstanceRequest{}, Resp: market.Instance{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.CreateInstanceRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.CreateInstanceOnce(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "GET", Path: "/api/v1/instances", Summary: "List your instances (admins: all=1)", Auth: true, Resp: []market.Instance{},
		Query: []param{{"all", "boolean", "admins only: every instance"}},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Instances(c.ctx(), c.caller, c.r.URL.Query().Get("all") != "")
		}},
	{Method: "GET", Path: "/api/v1/instances/{id}", Summary: "Show one of your instances", Auth: true, Resp: market.Instance{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Instance(c.ctx(), c.caller, market.InstanceID(c.pathID("id")))
		}},
	{Method: "POST", Path: "/api/v1/instances/{id}/stop", Summary: "Stop one of your instances; billing ends now", Auth: true, Resp: market.Instance{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.StopInstance(c.ctx(), c.caller, market.InstanceID(c.pathID("id")))
		}},
	{Method: "GET", Path: "/api/v1/instances/{id}/logs", Summary: "Read an instance's output; long-polls with wait", Auth: true, Resp: []market.LogChunk{},
		Query: []param{
			{"after", "integer", "only chunks with a higher seq"},
			{"limit", "integer", "at most this many chunks (1000)"},
			{"wait", "integer", "seconds to wait for new output while the instance runs (max 60)"},
		},
		Handle: func(s *Server, c *call) (any, error) {
			after, err := c.queryInt("after", 0)
			if err != nil {
				return nil, err
			}
			limit, err := c.queryInt("limit", 0)
			if err != nil {
				return nil, err
			}
			wait, err := c.querySeconds("wait")
			if err != nil {
				return nil, err
			}
			return s.svc.Logs(c.ctx(), c.caller, market.InstanceID(c.pathID("id")), after, int(limit), wait)
		}},
	{Method: "GET", Path: "/api/v1/instances/{id}/metrics", Summary: "Recent GPU metrics of one of your instances (utilisation, memory, power, temperature)", Auth: true, Resp: market.MetricsReport{},
		Query: metricsParams,
		Handle: func(s *Server, c *call) (any, error) {
			w, err := coord.ParseMetricsWindow(c.r.URL.Query().Get("window"))
			if err != nil {
				return nil, err
			}
			return s.svc.InstanceMetrics(c.ctx(), c.caller, market.InstanceID(c.pathID("id")), w)
		}},
	{Method: "GET", Path: "/api/v1/machines/{id}/metrics", Summary: "Recent GPU metrics of one of your machines", Auth: true, Resp: market.MetricsReport{},
		Query: metricsParams,
		Handle: func(s *Server, c *call) (any, error) {
			w, err := coord.ParseMetricsWindow(c.r.URL.Query().Get("window"))
			if err != nil {
				return nil, err
			}
			return s.svc.MachineMetrics(c.ctx(), c.caller, market.MachineID(c.pathID("id")), w)
		}},
	{Method: "GET", Path: "/api/v1/events", Summary: "Events about your instances and machines, newest first", Auth: true, Resp: []market.Event{},
		Query: []param{{"instance", "string", "one instance"}, {"machine", "string", "one machine"}, {"limit", "integer", "at most this many (100)"}},
		Handle: func(s *Server, c *call) (any, error) {
			q := c.r.URL.Query()
			limit, err := c.queryInt("limit", 0)
			if err != nil {
				return nil, err
			}
			return s.svc.Events(c.ctx(), c.caller, coord.EventFilter{Instance: market.InstanceID(q.Get("instance")), Machine: market.MachineID(q.Get("machine")), Limit: int(limit)})
		}},

	{Method: "GET", Path: "/api/v1/wallet", Summary: "Your balances", Auth: true, Resp: market.Wallet{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Wallet(c.ctx(), c.caller) }},
	{Method: "GET", Path: "/api/v1/wallet/history", Summary: "Movements of your accounts, newest first", Auth: true, Resp: []market.HistoryEntry{},
		Query: []param{{"before", "integer", "only transfers with a lower seq (paging)"}, {"limit", "integer", "at most this many transfers (100)"}},
		Handle: func(s *Server, c *call) (any, error) {
			before, err := c.queryInt("before", 0)
			if err != nil {
				return nil, err
			}
			limit, err := c.queryInt("limit", 0)
			if err != nil {
				return nil, err
			}
			return s.svc.History(c.ctx(), c.caller, before, int(limit))
		}},
	{Method: "GET", Path: "/api/v1/wallet/statement", Summary: "Your monthly statement: opening and closing balances per asset and account, every movement of the month (charges as minute ranges per instance)", Auth: true, Resp: market.WalletStatement{},
		Query: []param{{"month", "string", "the month, YYYY-MM (UTC)"}},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Statement(c.ctx(), c.caller, c.r.URL.Query().Get("month"))
		}},
	{Method: "POST", Path: "/api/v1/wallet/deposit", Summary: "Credit tokens to an account (admins; needs an Idempotency-Key header)", Auth: true, Idem: true,
		Req: market.DepositRequest{}, Resp: market.Transfer{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.DepositRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.Deposit(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "POST", Path: "/api/v1/wallet/faucet", Summary: "Credit yourself demo tokens (dev mode only)", Auth: true, Resp: market.Wallet{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Faucet(c.ctx(), c.caller) }},
	{Method: "GET", Path: "/api/v1/earnings", Summary: "What your machines earned", Auth: true, Resp: market.EarningsReport{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Earnings(c.ctx(), c.caller) }},
	{Method: "POST", Path: "/api/v1/wallet/withdraw", Summary: "Withdraw settled earnings: they are held and queued for payout (needs an Idempotency-Key header)", Auth: true, Idem: true, Status: http.StatusCreated,
		Req: market.WithdrawRequest{}, Resp: market.Withdrawal{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.WithdrawRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.Withdraw(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "GET", Path: "/api/v1/withdrawals", Summary: "Your withdrawals (admins: all=1 for everyone's)", Auth: true, Resp: []market.Withdrawal{},
		Query: []param{{"all", "boolean", "admins only: every account's"}, {"state", "string", "pending, completed or rejected"}},
		Handle: func(s *Server, c *call) (any, error) {
			q := c.r.URL.Query()
			return s.svc.Withdrawals(c.ctx(), c.caller, q.Get("all") != "", market.WithdrawalState(q.Get("state")))
		}},
	{Method: "POST", Path: "/api/v1/admin/withdrawals/{id}/complete", Summary: "Pay out a pending withdrawal (admins; needs an Idempotency-Key header)", Auth: true, Idem: true, Resp: market.Withdrawal{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.CompleteWithdrawal(c.ctx(), c.caller, idemKey(c), market.WithdrawalID(c.pathID("id")))
		}},
	{Method: "POST", Path: "/api/v1/admin/withdrawals/{id}/reject", Summary: "Reject a pending withdrawal and return the money (admins; needs an Idempotency-Key header)", Auth: true, Idem: true,
		Req: market.RejectRequest{}, Resp: market.Withdrawal{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.RejectRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.RejectWithdrawal(c.ctx(), c.caller, idemKey(c), market.WithdrawalID(c.pathID("id")), req.Reason)
		}},
	{Method: "GET", Path: "/api/v1/admin/ledger/check", Summary: "Check every ledger invariant and report each (admins)", Auth: true, Resp: market.LedgerReport{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.LedgerCheck(c.ctx(), c.caller) }},
	{Method: "POST", Path: "/api/v1/admin/refunds", Summary: "Refund a renter for minutes of an instance (host downtime): from the host's unsettled earnings first, then the platform's fees (admins; needs an Idempotency-Key header)", Auth: true, Idem: true, Status: http.StatusCreated,
		Req: market.RefundRequest{}, Resp: market.Refund{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.RefundRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.Refund(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "POST", Path: "/api/v1/admin/assets", Summary: "Create a project asset (token) that balances separately from the platform token (admins)", Auth: true, Status: http.StatusCreated,
		Req: market.CreateAssetRequest{}, Resp: market.AssetInfo{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.CreateAssetRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.CreateAsset(c.ctx(), c.caller, req)
		}},
	{Method: "GET", Path: "/api/v1/assets", Summary: "The platform token and the project assets", Auth: true, Resp: []market.AssetInfo{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Assets(c.ctx()) }},
	{Method: "POST", Path: "/api/v1/wallet/pay", Summary: "Pay a host in any asset, from your available balance to its earnings (needs an Idempotency-Key header)", Auth: true, Idem: true,
		Req: market.PayRequest{}, Resp: market.Transfer{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.PayRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.PayHost(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "GET", Path: "/api/v1/wallet/limits", Summary: "Your spend limits, your hourly rate and what you spent in the last hour", Auth: true, Resp: market.SpendStatus{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.SpendStatus(c.ctx(), c.caller) }},
	{Method: "PUT", Path: "/api/v1/wallet/limits", Summary: "Set your spend cap per hour and spend alert (0 turns one off)", Auth: true,
		Req: market.SpendLimits{}, Resp: market.SpendStatus{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.SpendLimits
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.SetSpendLimits(c.ctx(), c.caller, req)
		}},
	{Method: "GET", Path: "/api/v1/refunds", Summary: "Refunds you received (admins: all=1 for everyone's)", Auth: true, Resp: []market.Refund{},
		Query: []param{{"all", "boolean", "admins only: every renter's"}, {"instance", "string", "one instance"}},
		Handle: func(s *Server, c *call) (any, error) {
			q := c.r.URL.Query()
			return s.svc.Refunds(c.ctx(), c.caller, q.Get("all") != "", market.InstanceID(q.Get("instance")))
		}},
	{Method: "GET", Path: "/api/v1/stake", Summary: "Your stake, its cooldowns and the total staked", Auth: true, Resp: market.StakeInfo{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Stake(c.ctx(), c.caller) }},
	{Method: "POST", Path: "/api/v1/stake/add", Summary: "Stake tokens from your available balance (needs an Idempotency-Key header)", Auth: true, Idem: true,
		Req: market.StakeRequest{}, Resp: market.StakeInfo{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.StakeRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.AddStake(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "POST", Path: "/api/v1/stake/remove", Summary: "Unstake tokens; they return after the cooldown (needs an Idempotency-Key header)", Auth: true, Idem: true,
		Req: market.StakeRequest{}, Resp: market.Unstake{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.StakeRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.RemoveStake(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "GET", Path: "/api/v1/stake/statements", Summary: "Dividend statements, newest first: fees in, shares, payouts", Auth: true, Resp: []market.DividendStatement{},
		Query: []param{{"period", "integer", "one period (index since the epoch)"}, {"limit", "integer", "at most this many (10)"}},
		Handle: func(s *Server, c *call) (any, error) {
			period, err := c.queryInt("period", -1)
			if err != nil {
				return nil, err
			}
			limit, err := c.queryInt("limit", 0)
			if err != nil {
				return nil, err
			}
			return s.svc.Statements(c.ctx(), period, int(limit))
		}},

	{Method: "POST", Path: "/api/v1/bids", Summary: "Place a spot bid on a machine", Auth: true, Status: http.StatusCreated,
		Req: market.CreateBidRequest{}, Resp: market.Bid{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.CreateBidRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.CreateBid(c.ctx(), c.caller, req)
		}},
	{Method: "GET", Path: "/api/v1/bids", Summary: "List your spot bids", Auth: true, Resp: []market.Bid{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Bids(c.ctx(), c.caller) }},
	{Method: "GET", Path: "/api/v1/bids/{id}", Summary: "Show one of your spot bids", Auth: true, Resp: market.Bid{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Bid(c.ctx(), c.caller, market.BidID(c.pathID("id")))
		}},
	{Method: "PATCH", Path: "/api/v1/bids/{id}", Summary: "Change the price of one of your open bids", Auth: true,
		Req: market.BidChange{}, Resp: market.Bid{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.BidChange
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.ChangeBid(c.ctx(), c.caller, market.BidID(c.pathID("id")), req)
		}},
	{Method: "POST", Path: "/api/v1/bids/{id}/cancel", Summary: "Cancel one of your bids; its instance gets notice", Auth: true, Resp: market.Bid{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.CancelBid(c.ctx(), c.caller, market.BidID(c.pathID("id")))
		}},
	{Method: "GET", Path: "/api/v1/market/snapshot", Summary: "Spot market data: machines, terms and books, bidders left out", Auth: true, Resp: market.Snapshot{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Snapshot(c.ctx()) }},
	{Method: "GET", Path: "/api/v1/auction/rounds", Summary: "Stored spot clearing rounds, newest first", Auth: true, Resp: []coord.AuctionRound{},
		Query: []param{{"machine", "string", "one machine"}, {"before", "integer", "only rounds with a lower seq (paging)"}, {"limit", "integer", "at most this many (100)"}},
		Handle: func(s *Server, c *call) (any, error) {
			before, err := c.queryInt("before", 0)
			if err != nil {
				return nil, err
			}
			limit, err := c.queryInt("limit", 0)
			if err != nil {
				return nil, err
			}
			return s.svc.Rounds(c.ctx(), coord.RoundFilter{Machine: market.MachineID(c.r.URL.Query().Get("machine")), Before: before, Limit: int(limit)})
		}},
	{Method: "GET", Path: "/api/v1/auction/rounds/{id}", Summary: "One clearing round: inputs, candidates, winners, preemptions", Auth: true, Resp: coord.AuctionRound{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Round(c.ctx(), market.RoundID(c.pathID("id")))
		}},
	{Method: "POST", Path: "/api/v1/auction/rounds/{id}/replay", Summary: "Recompute a round from its stored inputs and compare", Auth: true, Resp: coord.RoundReplay{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.ReplayRound(c.ctx(), market.RoundID(c.pathID("id")))
		}},

	// Deployments (issue 10): {id} is a deployment ID or the name of one
	// of yours.
	{Method: "GET", Path: "/api/v1/deployments", Summary: "List your deployments (admins: all=1 for every one)", Auth: true, Resp: []market.Deployment{},
		Query: []param{{"all", "boolean", "admins only: every deployment"}},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Deployments(c.ctx(), c.caller, c.r.URL.Query().Get("all") != "")
		}},
	{Method: "POST", Path: "/api/v1/deployments", Summary: "Create a deployment: replicas the coordinator keeps running, spread, scaled and updated", Auth: true, Status: http.StatusCreated,
		Req: market.DeploymentSpec{}, Resp: market.Deployment{},
		Handle: func(s *Server, c *call) (any, error) {
			var spec market.DeploymentSpec
			if err := c.decode(&spec); err != nil {
				return nil, err
			}
			return s.svc.CreateDeployment(c.ctx(), c.caller, spec)
		}},
	{Method: "PUT", Path: "/api/v1/deployments", Summary: "Apply a deployment spec: create it, or update your deployment of that name", Auth: true,
		Req: market.DeploymentSpec{}, Resp: market.ApplyResult{},
		Handle: func(s *Server, c *call) (any, error) {
			var spec market.DeploymentSpec
			if err := c.decode(&spec); err != nil {
				return nil, err
			}
			d, created, err := s.svc.ApplyDeployment(c.ctx(), c.caller, spec)
			return market.ApplyResult{Deployment: d, Created: created}, err
		}},
	{Method: "GET", Path: "/api/v1/deployments/{id}", Summary: "Show a deployment with its replicas and its recent decisions and their reasons", Auth: true, Resp: market.DeploymentView{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.Deployment(c.ctx(), c.caller, c.pathID("id"))
		}},
	{Method: "PUT", Path: "/api/v1/deployments/{id}", Summary: "Replace a deployment's spec; a new image, command or env rolls out one replica at a time", Auth: true,
		Req: market.DeploymentSpec{}, Resp: market.Deployment{},
		Handle: func(s *Server, c *call) (any, error) {
			var spec market.DeploymentSpec
			if err := c.decode(&spec); err != nil {
				return nil, err
			}
			return s.svc.UpdateDeployment(c.ctx(), c.caller, c.pathID("id"), spec)
		}},
	{Method: "POST", Path: "/api/v1/deployments/{id}/scale", Summary: "Change a deployment's replica bounds or count", Auth: true,
		Req: market.ScaleRequest{}, Resp: market.Deployment{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.ScaleRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.ScaleDeployment(c.ctx(), c.caller, c.pathID("id"), req)
		}},
	{Method: "DELETE", Path: "/api/v1/deployments/{id}", Summary: "Delete a deployment: its replicas stop, then it is gone", Auth: true, Resp: market.Deployment{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.DeleteDeployment(c.ctx(), c.caller, c.pathID("id"))
		}},
	{Method: "GET", Path: "/api/v1/admin/pools", Summary: "Capacity pools with their quota and use (admins)", Auth: true, Resp: []market.PoolUsage{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Pools(c.ctx(), c.caller) }},
	{Method: "PUT", Path: "/api/v1/admin/pools/{id}", Summary: "Create or change a capacity pool; shares add up to at most 100% (admins)", Auth: true,
		Req: market.Pool{}, Resp: market.Pool{},
		Handle: func(s *Server, c *call) (any, error) {
			var p market.Pool
			if err := c.decode(&p); err != nil {
				return nil, err
			}
			if p.Name != "" && p.Name != c.pathID("id") {
				return nil, errorf("the body names pool %q but the path %q", p.Name, c.pathID("id"))
			}
			p.Name = c.pathID("id")
			return s.svc.PutPool(c.ctx(), c.caller, p)
		}},
	{Method: "DELETE", Path: "/api/v1/admin/pools/{id}", Summary: "Delete a capacity pool no machine is assigned to (admins)", Auth: true, Status: http.StatusNoContent,
		Handle: func(s *Server, c *call) (any, error) {
			return nil, s.svc.DeletePool(c.ctx(), c.caller, c.pathID("id"))
		}},
	{Method: "POST", Path: "/api/v1/admin/pools/assign", Summary: "Assign machines to a pool, or take them out of pools with pool \"\" (admins)", Auth: true,
		Req: market.PoolAssignment{}, Resp: market.PoolAssignment{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.PoolAssignment
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return req, s.svc.AssignPool(c.ctx(), c.caller, req.Pool, req.Machines)
		}},

	{Method: "POST", Path: "/agent/v1/register", Summary: "Agent: register (or re-register) the host's machine", Auth: true,
		Req: market.Hardware{}, Resp: market.Machine{},
		Handle: func(s *Server, c *call) (any, error) {
			var hw market.Hardware
			if err := c.decode(&hw); err != nil {
				return nil, err
			}
			return s.svc.RegisterMachine(c.ctx(), c.caller, hw)
		}},
	{Method: "GET", Path: "/agent/v1/machines/{id}/desired", Summary: "Agent: long-poll the machine's desired state", Auth: true, Resp: market.DesiredState{},
		Query: []param{{"version", "integer", "the version the agent has; the call waits while it is current"}, {"wait", "integer", "seconds to wait (max 60)"}},
		Handle: func(s *Server, c *call) (any, error) {
			v := c.r.URL.Query().Get("version")
			var since int64
			if v != "" {
				var err error
				if since, err = strconv.ParseInt(v, 10, 64); err != nil {
					return nil, errorf("version=%q must be an integer", v)
				}
			}
			wait, err := c.querySeconds("wait")
			if err != nil {
				return nil, err
			}
			return s.svc.Desired(c.ctx(), c.caller, market.MachineID(c.pathID("id")), since, wait)
		}},
	{Method: "POST", Path: "/agent/v1/machines/{id}/checks/{check}/commit", Summary: "Agent: commit to a verification challenge (Merkle roots); answers with the tiles to prove", Auth: true,
		Req: market.ChallengeCommit{}, Resp: market.ChallengeSamples{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.ChallengeCommit
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.CommitChallenge(c.ctx(), c.caller, market.MachineID(c.pathID("id")), market.CheckID(c.pathID("check")), req)
		}},
	{Method: "POST", Path: "/agent/v1/machines/{id}/checks/{check}/proofs", Summary: "Agent: prove the asked tiles of a verification challenge; answers with the finished check", Auth: true,
		Req: market.ChallengeProofs{}, Resp: market.Check{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.ChallengeProofs
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.ProveChallenge(c.ctx(), c.caller, market.MachineID(c.pathID("id")), market.CheckID(c.pathID("check")), req)
		}},
	{Method: "POST", Path: "/agent/v1/machines/{id}/report", Summary: "Agent: report observed state, logs and heartbeat", Auth: true,
		Req: market.Report{}, Resp: market.ReportResult{},
		Handle: func(s *Server, c *call) (any, error) {
			var rep market.Report
			if err := c.decode(&rep); err != nil {
				return nil, err
			}
			return s.svc.Report(c.ctx(), c.caller, market.MachineID(c.pathID("id")), rep)
		}},
}

// idemKey is the call's Idempotency-Key header.
func idemKey(c *call) string { return c.r.Header.Get("Idempotency-Key") }

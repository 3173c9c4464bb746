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
	Status                int // success status; 0 = 200
	Req, Resp             any // samples of the body types, for OpenAPI
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

	{Method: "POST", Path: "/api/v1/instances", Summary: "Rent GPUs of a machine on demand", Auth: true, Status: http.StatusCreated,
		Req: market.CreateInstanceRequest{}, Resp: market.Instance{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.CreateInstanceRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.CreateInstance(c.ctx(), c.caller, req)
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
	{Method: "POST", Path: "/api/v1/wallet/deposit", Summary: "Credit tokens to an account (admins; needs an Idempotency-Key header)", Auth: true,
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
	{Method: "POST", Path: "/api/v1/wallet/withdraw", Summary: "Withdraw settled earnings: they are held and queued for payout (needs an Idempotency-Key header)", Auth: true, Status: http.StatusCreated,
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
	{Method: "POST", Path: "/api/v1/admin/withdrawals/{id}/complete", Summary: "Pay out a pending withdrawal (admins; needs an Idempotency-Key header)", Auth: true, Resp: market.Withdrawal{},
		Handle: func(s *Server, c *call) (any, error) {
			return s.svc.CompleteWithdrawal(c.ctx(), c.caller, idemKey(c), market.WithdrawalID(c.pathID("id")))
		}},
	{Method: "POST", Path: "/api/v1/admin/withdrawals/{id}/reject", Summary: "Reject a pending withdrawal and return the money (admins; needs an Idempotency-Key header)", Auth: true,
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
	{Method: "GET", Path: "/api/v1/stake", Summary: "Your stake, its cooldowns and the total staked", Auth: true, Resp: market.StakeInfo{},
		Handle: func(s *Server, c *call) (any, error) { return s.svc.Stake(c.ctx(), c.caller) }},
	{Method: "POST", Path: "/api/v1/stake/add", Summary: "Stake tokens from your available balance (needs an Idempotency-Key header)", Auth: true,
		Req: market.StakeRequest{}, Resp: market.StakeInfo{},
		Handle: func(s *Server, c *call) (any, error) {
			var req market.StakeRequest
			if err := c.decode(&req); err != nil {
				return nil, err
			}
			return s.svc.AddStake(c.ctx(), c.caller, idemKey(c), req)
		}},
	{Method: "POST", Path: "/api/v1/stake/remove", Summary: "Unstake tokens; they return after the cooldown (needs an Idempotency-Key header)", Auth: true,
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

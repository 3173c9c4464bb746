package webui

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/auction"
	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// API keys.

type keysData struct {
	Keys    []market.APIKey
	NewKey  *market.NewAPIKey // the key just created: its secret is shown this once
	Session market.APIKeyID   // the key of this web session
}

const maxKeyName = 64

func (s *server) keys(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "API keys", "account"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderKeys(w, r, p, sess, http.StatusOK, nil)
}

func (s *server) renderKeys(w http.ResponseWriter, r *http.Request, p *page, sess session, status int, nk *market.NewAPIKey) {
	ks, err := s.svc.Keys(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	// Newest first, revoked last.
	slices.SortStableFunc(ks, func(a, b market.APIKey) int {
		if (a.RevokedAt == nil) != (b.RevokedAt == nil) {
			if a.RevokedAt == nil {
				return -1
			}
			return 1
		}
		return b.CreatedAt.Compare(a.CreatedAt)
	})
	p.Data = &keysData{Keys: ks, NewKey: nk, Session: sess.keyID}
	s.render(w, r, status, "keys", p)
}

func (s *server) createKey(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "API keys", "account"
	p.Form = r.PostForm
	name := strings.TrimSpace(r.PostForm.Get("name"))
	switch {
	case name == "":
		p.fieldError("name", "give the key a name that says where it is used, like laptop or ci")
	case len(name) > maxKeyName:
		p.fieldError("name", fmt.Sprintf("the name is longer than %d characters", maxKeyName))
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		p.fieldError("name", "the name must not contain control characters")
	}
	if len(p.Errors) > 0 {
		s.renderKeys(w, r, p, sess, http.StatusBadRequest, nil)
		return
	}
	nk, err := s.svc.CreateKey(r.Context(), sess.account, name)
	if err != nil {
		if !userError(err) {
			s.fail(w, r, p, err)
			return
		}
		p.fieldError("name", market.Message(err))
		s.renderKeys(w, r, p, sess, statusOfForm(err), nil)
		return
	}
	// Rendered, not redirected: the secret must not travel in a URL, and
	// this page is the only time it is shown.
	p.Form = nil
	p.Flash = "Key created. Copy the secret now: it is not shown again."
	s.renderKeys(w, r, p, sess, http.StatusOK, &nk)
}

func (s *server) revokeKey(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "API keys", "account"
	id := market.APIKeyID(r.PathValue("id"))
	if id == sess.keyID {
		p.Error = "this key is your web session; log out instead"
		s.renderKeys(w, r, p, sess, http.StatusBadRequest, nil)
		return
	}
	if err := s.svc.RevokeKey(r.Context(), sess.account, id); err != nil {
		s.fail(w, r, p, err)
		return
	}
	http.Redirect(w, r, "/account?flash=revoked", http.StatusSeeOther)
}

// Bids.

// bidRow is a bid with its standing in the last round of its machine.
type bidRow struct {
	Bid      market.Bid
	Round    *coord.AuctionRound
	Standing string // won, lost, dropped or not yet cleared
	Profit   market.Money
	Why      string
}

func (s *server) bids(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Bids", "bids"
	bs, err := s.svc.Bids(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	slices.SortFunc(bs, func(a, b market.Bid) int { return b.CreatedAt.Compare(a.CreatedAt) })
	last := map[market.MachineID]*coord.AuctionRound{}
	rows := make([]bidRow, 0, len(bs))
	for _, b := range bs {
		rd, seen := last[b.Machine]
		if !seen {
			rs, err := s.svc.Rounds(r.Context(), coord.RoundFilter{Machine: b.Machine, Limit: 1})
			if err != nil {
				s.fail(w, r, p, err)
				return
			}
			if len(rs) > 0 {
				rd = &rs[0]
			}
			last[b.Machine] = rd
		}
		rows = append(rows, standing(b, rd))
	}
	p.Data = rows
	s.render(w, r, http.StatusOK, "bids", p)
}

// standing says how a bid fared in round rd, the last of its machine.
func standing(b market.Bid, rd *coord.AuctionRound) bidRow {
	row := bidRow{Bid: b, Round: rd, Standing: "not in a round yet"}
	if rd == nil {
		return row
	}
	for _, md := range rd.Decision.Machines {
		if md.Machine != b.Machine {
			continue
		}
		for _, c := range md.Candidates {
			if c.Bid != b.ID {
				continue
			}
			row.Profit = c.Profit
			switch {
			case !c.Feasible():
				row.Standing, row.Why = "dropped", c.Message()
			case slices.ContainsFunc(md.Winners, func(w auction.Winner) bool { return w.Bid == b.ID }):
				row.Standing = "won"
			default:
				row.Standing = "lost"
				row.Why = fmt.Sprintf("the winners' host profit was %s; this bid's %s", md.Profit, c.Profit)
			}
			return row
		}
	}
	row.Standing = "placed after the last round"
	return row
}

// Market.

type marketData struct {
	Snapshot market.Snapshot
	Total    int // machines in the snapshot; the page shows maxMarketMachines
	Rounds   []roundView
	Caller   market.AccountID
}

// roundView is one machine's outcome in a round, with the arithmetic of
// each winner's host profit.
type roundView struct {
	ID         market.RoundID
	Machine    market.MachineID
	At         time.Time
	Interval   time.Duration
	Free       int
	Incumbency auction.Incumbency
	Error      string
	Profit     market.Money
	Energy     market.Money // per kWh
	Winners    []winnerView
	Bids       int
}

type winnerView struct {
	Bid    market.BidID
	Yours  bool
	GPUs   int
	Price  market.Money // per GPU-day
	PowerW int
	Income market.Money // price x GPUs x interval
	Cost   market.Money // energy at the power limit over the interval
	Profit market.Money
}

// maxMarketRounds and maxMarketMachines bound what the market page lists;
// the API's snapshot has everything.
const (
	maxMarketRounds   = 20
	maxMarketMachines = 100
)

func (s *server) marketPage(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Market", "market"
	snap, err := s.snapshot.get(r.Context(), s.svc.Snapshot)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	rs, err := s.svc.Rounds(r.Context(), coord.RoundFilter{Limit: maxMarketRounds})
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d := &marketData{Snapshot: snap, Caller: sess.account.ID, Total: len(snap.Machines)}
	if len(snap.Machines) > maxMarketMachines {
		// Machines with bids first: that is where the market is.
		ms := slices.Clone(snap.Machines)
		slices.SortStableFunc(ms, func(a, b market.SnapshotMachine) int { return len(b.Bids) - len(a.Bids) })
		d.Snapshot.Machines = ms[:maxMarketMachines]
	}
	for _, rd := range rs {
		d.Rounds = append(d.Rounds, roundViews(rd, sess.account.ID)...)
	}
	p.Data = d
	s.render(w, r, http.StatusOK, "market", p)
}

// roundViews explains a round: per machine, each winner's income, energy
// cost and the profit the clearing compared. Bidders are not shown, only
// whether a winner is the caller's own bid.
func roundViews(rd coord.AuctionRound, caller market.AccountID) []roundView {
	var out []roundView
	for i, md := range rd.Decision.Machines {
		v := roundView{ID: rd.ID, Machine: md.Machine, At: rd.At, Interval: rd.Input.Interval, Free: md.Free,
			Incumbency: md.Incumbency, Error: md.Error, Profit: md.Profit, Bids: len(md.Candidates)}
		var in *auction.Machine
		if i < len(rd.Input.Machines) && rd.Input.Machines[i].ID == md.Machine {
			in = &rd.Input.Machines[i]
			v.Energy = in.Terms.EnergyPerKWh
		}
		for _, wn := range md.Winners {
			wv := winnerView{Bid: wn.Bid, Yours: wn.Bidder == caller, GPUs: wn.GPUs, Profit: wn.Profit}
			if in != nil {
				for _, e := range in.Bids {
					if e.Bid.ID == wn.Bid {
						wv.Price, wv.PowerW = e.Bid.PricePerGPUDay, e.Bid.PowerLimitW
						// The income with no energy cost, rounded as the
						// profit is, so that income - energy = profit exactly.
						wv.Income, _ = auction.Profit(e.Bid.PricePerGPUDay, 0, 0, wn.GPUs, rd.Input.Interval)
						wv.Cost = wv.Income - wn.Profit
					}
				}
			}
			v.Winners = append(v.Winners, wv)
		}
		out = append(out, v)
	}
	return out
}

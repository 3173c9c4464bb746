package webui

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/webui/chart"
)

// Operator pages. The service checks the admin role on every call; the
// pages check it first too, to say so plainly instead of half a page.

func needsAdmin(sess session) error {
	if !sess.account.Has(market.RoleAdmin) {
		return market.Errorf("admin page", market.Forbidden, "this page is for operators (the admin role); you are logged in as %s", sess.account.Email)
	}
	return nil
}

// fleetRow counts the machines of one region and GPU model.
type fleetRow struct {
	Region, Model        string
	Machines, Online     int
	GPUs, Rented, Listed int
	OnlineGPUs           int
}

type adminData struct {
	Machines, Online, Listed int
	GPUs, Rented             int
	Fleet                    []fleetRow
	Pending                  int
	PendingAmount            market.Money
	Revenue                  template.HTML
}

// fleet groups machines by region and GPU model, biggest groups first.
func fleet(ms []market.Machine) (adminData, []fleetRow) {
	var d adminData
	rows := map[[2]string]*fleetRow{}
	for _, m := range ms {
		model := "no GPU"
		if len(m.GPUs) > 0 {
			model = m.GPUs[0].Model
		}
		region := m.Region
		if region == "" {
			region = "—"
		}
		k := [2]string{region, model}
		r := rows[k]
		if r == nil {
			r = &fleetRow{Region: region, Model: model}
			rows[k] = r
		}
		r.Machines++
		r.GPUs += len(m.GPUs)
		r.Rented += len(m.UsedGPUs)
		d.Machines++
		d.GPUs += len(m.GPUs)
		d.Rented += len(m.UsedGPUs)
		if m.Online {
			r.Online++
			r.OnlineGPUs += len(m.GPUs)
			d.Online++
		}
		if m.Listed {
			r.Listed++
			d.Listed++
		}
	}
	out := make([]fleetRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b fleetRow) int {
		return cmp.Or(cmp.Compare(b.Online, a.Online), cmp.Compare(b.Machines, a.Machines), cmp.Compare(a.Region, b.Region), cmp.Compare(a.Model, b.Model))
	})
	return d, out
}

// revenueChart draws the platform fees of each UTC day, oldest first.
func revenueChart(days []market.DayRevenue) template.HTML {
	c := chart.Bar{ID: "revenue-chart", Title: "Platform fees per UTC day", Unit: "tokens", Empty: "No platform fees in the last " + strconv.Itoa(len(days)) + " days"}
	if slices.ContainsFunc(days, func(d market.DayRevenue) bool { return d.Fees != 0 }) {
		for _, d := range days {
			label := d.Day
			if t, err := time.Parse(time.DateOnly, d.Day); err == nil {
				label = t.Format("Jan 2")
			}
			c.Labels = append(c.Labels, label)
			c.Values = append(c.Values, float64(d.Fees)/float64(market.Tokens(1)))
		}
	}
	return c.HTML()
}

// revenueDays is how many days the revenue chart shows.
const revenueDays = 30

func (s *server) adminOverview(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Network overview", "admin"
	if err := needsAdmin(sess); err != nil {
		s.fail(w, r, p, err)
		return
	}
	ms, err := s.fleet.get(r.Context(), func(ctx context.Context) ([]market.Machine, error) {
		return s.svc.Fleet(ctx, sess.account)
	})
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	ws, err := s.svc.Withdrawals(r.Context(), sess.account, true, market.WithdrawalPending)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	rev, err := s.revenue.get(r.Context(), func(ctx context.Context) ([]market.DayRevenue, error) {
		return s.svc.Revenue(ctx, sess.account, revenueDays)
	})
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d, rows := fleet(ms)
	d.Fleet = rows
	d.Pending = len(ws)
	for _, w := range ws {
		d.PendingAmount += w.Amount
	}
	d.Revenue = revenueChart(rev)
	p.Data = &d
	s.render(w, r, http.StatusOK, "admin", p)
}

func (s *server) adminLedger(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Ledger check", "admin"
	if err := needsAdmin(sess); err != nil {
		s.fail(w, r, p, err)
		return
	}
	rep, err := s.svc.LedgerCheck(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Data = rep
	s.render(w, r, http.StatusOK, "admin-ledger", p)
}

type queueData struct {
	Withdrawals []market.Withdrawal
	Key         string
}

func (s *server) adminWithdrawals(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Withdrawal queue", "admin"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderQueue(w, r, p, sess, http.StatusOK)
}

func (s *server) renderQueue(w http.ResponseWriter, r *http.Request, p *page, sess session, status int) {
	if err := needsAdmin(sess); err != nil {
		s.fail(w, r, p, err)
		return
	}
	ws, err := s.svc.Withdrawals(r.Context(), sess.account, true, market.WithdrawalPending)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	slices.SortFunc(ws, func(a, b market.Withdrawal) int { return a.CreatedAt.Compare(b.CreatedAt) })
	// An error about a withdrawal that left the queue (decided meanwhile)
	// has no row to sit next to: show it above the table.
	for k, msg := range p.Errors {
		id, ok := strings.CutPrefix(k, "decide:")
		if ok && !slices.ContainsFunc(ws, func(w market.Withdrawal) bool { return string(w.ID) == id }) {
			p.Error = msg
		}
	}
	p.Data = &queueData{Withdrawals: ws, Key: newFormKey()}
	s.render(w, r, status, "admin-withdrawals", p)
}

// maxReason bounds a rejection reason.
const maxReason = 500

// decideWithdrawal pays out (complete) or returns (reject) a withdrawal.
func (s *server) decideWithdrawal(complete bool) func(http.ResponseWriter, *http.Request, *page, session) {
	return func(w http.ResponseWriter, r *http.Request, p *page, sess session) {
		p.Title, p.Nav = "Withdrawal queue", "admin"
		if err := needsAdmin(sess); err != nil {
			s.fail(w, r, p, err)
			return
		}
		p.Form = r.PostForm
		status := http.StatusBadRequest
		id := market.WithdrawalID(r.PathValue("id"))
		field := "decide:" + string(id)
		reason := strings.TrimSpace(r.PostForm.Get("reason"))
		if !complete {
			switch {
			case reason == "":
				p.fieldError(field, "say why it is rejected; the host sees the reason")
			case len(reason) > maxReason:
				p.fieldError(field, fmt.Sprintf("the reason is longer than %d characters", maxReason))
			}
		}
		key := formKey(p, field)
		if len(p.Errors) == 0 {
			var err error
			if complete {
				_, err = s.svc.CompleteWithdrawal(r.Context(), sess.account, key, id)
			} else {
				_, err = s.svc.RejectWithdrawal(r.Context(), sess.account, key, id, reason)
			}
			if err == nil {
				flash := "rejected"
				if complete {
					flash = "completed"
				}
				http.Redirect(w, r, "/admin/withdrawals?flash="+flash, http.StatusSeeOther)
				return
			}
			if !userError(err) || market.IsKind(err, market.Forbidden) || market.IsKind(err, market.NotFound) {
				s.fail(w, r, p, err)
				return
			}
			p.fieldError(field, market.Message(err))
			status = statusOfForm(err)
		}
		s.renderQueue(w, r, p, sess, status)
	}
}

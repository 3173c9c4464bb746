package webui

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

type walletData struct {
	Wallet  market.Wallet
	History []market.HistoryEntry
	Month   string // the statement form's default: this month
}

func (s *server) wallet(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Wallet", "wallet"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderWallet(w, r, p, sess, http.StatusOK)
}

func (s *server) renderWallet(w http.ResponseWriter, r *http.Request, p *page, sess session, status int) {
	wal, err := s.svc.Wallet(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	hist, err := s.svc.History(r.Context(), sess.account, 0, 100)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Data = &walletData{Wallet: wal, History: hist, Month: time.Now().UTC().Format("2006-01")}
	s.render(w, r, status, "wallet", p)
}

func (s *server) faucet(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Wallet", "wallet"
	if _, err := s.svc.Faucet(r.Context(), sess.account); err != nil {
		s.fail(w, r, p, err)
		return
	}
	http.Redirect(w, r, "/wallet?flash=faucet", http.StatusSeeOther)
}

type machinesData struct {
	Machines []market.Machine
}

func (s *server) machines(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Machines", "machines"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderMachines(w, r, p, sess, http.StatusOK)
}

func (s *server) renderMachines(w http.ResponseWriter, r *http.Request, p *page, sess session, status int) {
	ms, err := s.svc.Machines(r.Context(), sess.account, false)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Data = &machinesData{Machines: ms}
	s.render(w, r, status, "machines", p)
}

func (s *server) setPrice(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Machines", "machines"
	p.Form = r.PostForm
	id := market.MachineID(r.PathValue("id"))
	key := "price:" + string(id)
	raw := strings.TrimSpace(r.PostForm.Get("price"))
	price, err := market.ParseMoney(raw)
	switch {
	case raw == "":
		p.fieldError(key, "enter a price per GPU-hour, like 0.50")
	case len(raw) > 32 || err != nil:
		p.fieldError(key, fmt.Sprintf("%q is not an amount; write tokens with up to 6 decimals, like 0.50", raw))
	case price <= 0:
		p.fieldError(key, "the price must be above zero")
	}
	if len(p.Errors) == 0 {
		_, err = s.svc.UpdateMachine(r.Context(), sess.account, id, market.MachineUpdate{PricePerGPUHour: &price})
		if err == nil {
			http.Redirect(w, r, "/machines?flash=price", http.StatusSeeOther)
			return
		}
		if !userError(err) || market.IsKind(err, market.NotFound) {
			s.fail(w, r, p, err)
			return
		}
		p.fieldError(key, market.Message(err))
	}
	s.renderMachines(w, r, p, sess, http.StatusBadRequest)
}

func (s *server) setListing(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Machines", "machines"
	id := market.MachineID(r.PathValue("id"))
	var listed bool
	switch r.PostForm.Get("listed") {
	case "yes":
		listed = true
	case "no":
	default:
		p.fieldError("listing:"+string(id), "choose to list or unlist the machine")
		s.renderMachines(w, r, p, sess, http.StatusBadRequest)
		return
	}
	if _, err := s.svc.SetListed(r.Context(), sess.account, id, listed); err != nil {
		if !userError(err) || market.IsKind(err, market.NotFound) {
			s.fail(w, r, p, err)
			return
		}
		p.fieldError("listing:"+string(id), market.Message(err))
		s.renderMachines(w, r, p, sess, statusOfForm(err))
		return
	}
	flash := "unlisted"
	if listed {
		flash = "listed"
	}
	http.Redirect(w, r, "/machines?"+url.Values{"flash": {flash}}.Encode(), http.StatusSeeOther)
}

type earningsData struct {
	market.EarningsReport
	Chart template.HTML
}

func (s *server) earnings(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Earnings", "earnings"
	rep, err := s.svc.Earnings(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Data = &earningsData{EarningsReport: rep, Chart: earningsChart(rep.Days)}
	s.render(w, r, http.StatusOK, "earnings", p)
}

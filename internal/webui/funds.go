package webui

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Withdrawals and staking. Every money form carries an idempotency key made
// when the form was shown, so a double click or a resent form moves money
// once.

const keyField = "idem"

// newFormKey returns the idempotency key of a fresh money form.
func newFormKey() string { return "web-" + market.RandomToken(16) }

// formKey returns the posted idempotency key, or records a form error.
func formKey(p *page, field string) string {
	k := p.Form.Get(keyField)
	if !validFormKey(k) {
		p.fieldError(field, "this form is incomplete; reload the page and send it again")
		return ""
	}
	return k
}

// validFormKey reports whether k can be a key that newFormKey made.
func validFormKey(k string) bool {
	return k != "" && len(k) <= 64 && !strings.ContainsAny(k, " \t\r\n")
}

// parseAmount reads a token amount from a form field, or records why not.
func parseAmount(p *page, field, what string) market.Money {
	raw := strings.TrimSpace(p.Form.Get(field))
	m, err := market.ParseMoney(raw)
	switch {
	case raw == "":
		p.fieldError(field, "enter an amount to "+what+", like 10 or 2.5")
	case len(raw) > 32 || err != nil:
		p.fieldError(field, fmt.Sprintf("%q is not an amount; write tokens with up to 6 decimals, like 2.5", raw))
	case m <= 0:
		p.fieldError(field, "the amount must be above zero")
	}
	return m
}

type withdrawalsData struct {
	Earnings    market.EarningsReport
	Withdrawals []market.Withdrawal
	Key         string
}

func (s *server) withdrawals(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Withdrawals", "earnings"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderWithdrawals(w, r, p, sess, http.StatusOK)
}

func (s *server) renderWithdrawals(w http.ResponseWriter, r *http.Request, p *page, sess session, status int) {
	rep, err := s.svc.Earnings(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	ws, err := s.svc.Withdrawals(r.Context(), sess.account, false, "")
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Data = &withdrawalsData{Earnings: rep, Withdrawals: ws, Key: newFormKey()}
	s.render(w, r, status, "withdrawals", p)
}

func (s *server) withdraw(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Withdrawals", "earnings"
	p.Form = r.PostForm
	status := http.StatusBadRequest
	amount := parseAmount(p, "amount", "withdraw")
	key := formKey(p, "amount")
	if len(p.Errors) == 0 {
		_, err := s.svc.Withdraw(r.Context(), sess.account, key, market.WithdrawRequest{Amount: amount})
		if err == nil {
			http.Redirect(w, r, "/withdrawals?flash=withdrawn", http.StatusSeeOther)
			return
		}
		if !userError(err) {
			s.fail(w, r, p, err)
			return
		}
		p.fieldError("amount", market.Message(err))
		status = statusOfForm(err)
	}
	s.renderWithdrawals(w, r, p, sess, status)
}

type stakeData struct {
	Stake      market.StakeInfo
	Wallet     market.Wallet
	Statements []market.DividendStatement
	Key        string
}

// maxStatements bounds the statements the staking page lists.
const maxStatements = 10

func (s *server) stake(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Staking", "wallet"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderStake(w, r, p, sess, http.StatusOK)
}

func (s *server) renderStake(w http.ResponseWriter, r *http.Request, p *page, sess session, status int) {
	st, err := s.svc.Stake(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	wal, err := s.svc.Wallet(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	sts, err := s.svc.Statements(r.Context(), -1, maxStatements)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Data = &stakeData{Stake: st, Wallet: wal, Statements: sts, Key: newFormKey()}
	s.render(w, r, status, "stake", p)
}

// changeStake stakes (add) or unstakes (remove) an amount.
func (s *server) changeStake(add bool) func(http.ResponseWriter, *http.Request, *page, session) {
	field, what, flash := "unstake", "unstake", "unstaked"
	if add {
		field, what, flash = "stake", "stake", "staked"
	}
	return func(w http.ResponseWriter, r *http.Request, p *page, sess session) {
		p.Title, p.Nav = "Staking", "wallet"
		p.Form = r.PostForm
		status := http.StatusBadRequest
		amount := parseAmount(p, field, what)
		key := formKey(p, field)
		if len(p.Errors) == 0 {
			var err error
			req := market.StakeRequest{Amount: amount}
			if add {
				_, err = s.svc.AddStake(r.Context(), sess.account, key, req)
			} else {
				_, err = s.svc.RemoveStake(r.Context(), sess.account, key, req)
			}
			if err == nil {
				http.Redirect(w, r, "/stake?flash="+flash, http.StatusSeeOther)
				return
			}
			if !userError(err) {
				s.fail(w, r, p, err)
				return
			}
			p.fieldError(field, market.Message(err))
			status = statusOfForm(err)
		}
		s.renderStake(w, r, p, sess, status)
	}
}

// statement sends the caller's wallet statement of a month as a CSV (or
// JSON) download. A bad month shows the wallet page with the error next
// to the month field.
func (s *server) statement(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Wallet", "wallet"
	q := r.URL.Query()
	p.Form = q
	month := strings.TrimSpace(q.Get("month"))
	format := q.Get("format")
	switch {
	case month == "":
		p.fieldError("month", "choose a month, like "+time.Now().UTC().Format("2006-01"))
	case len(month) > 7:
		p.fieldError("month", fmt.Sprintf("%q is not a month; write YYYY-MM, like 2026-11", month))
	}
	if format != "" && format != "csv" && format != "json" {
		p.fieldError("month", "the statement comes as csv or json")
	}
	var st market.WalletStatement
	if len(p.Errors) == 0 {
		var err error
		st, err = s.svc.Statement(r.Context(), sess.account, month)
		if err != nil {
			if !userError(err) {
				s.fail(w, r, p, err)
				return
			}
			p.fieldError("month", market.Message(err))
		}
	}
	if len(p.Errors) > 0 {
		s.renderWallet(w, r, p, sess, http.StatusBadRequest)
		return
	}
	name := "gpumarket-statement-" + st.Month
	w.Header().Set("Cache-Control", "no-store")
	if format == "json" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.json"`)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
	_ = writeStatementCSV(w, st)
}

// writeStatementCSV writes the balances, then the lines, of a statement;
// amounts in tokens with their six decimals, as the ledger keeps them.
func writeStatementCSV(w io.Writer, st market.WalletStatement) error {
	cw := csv.NewWriter(w)
	amount := func(m market.Money) string { return m.String() }
	rows := [][]string{{"section", "time", "kind", "asset", "account", "amount", "instance", "minutes", "reason", "opening", "in", "out", "closing"}}
	for _, b := range st.Balances {
		rows = append(rows, []string{"balance", st.From.Format(time.RFC3339), "", string(b.Asset), string(b.Account), "", "", "", "",
			amount(b.Opening), amount(b.In), amount(b.Out), amount(b.Closing)})
	}
	for _, l := range st.Lines {
		mins := ""
		if l.ToMinute > l.FromMinute {
			mins = strconv.FormatInt(l.ToMinute-l.FromMinute, 10)
		}
		rows = append(rows, []string{"line", l.At.UTC().Format(time.RFC3339), string(l.Kind), string(l.Asset), string(l.Account), amount(l.Amount),
			string(l.Instance), mins, csvSafe(l.Reason), "", "", "", ""})
	}
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	return cw.Error()
}

// csvSafe keeps a free text from being read as a formula by spreadsheets.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

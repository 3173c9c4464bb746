package cli

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

type walletCmd struct {
	Show    walletShowCmd    `cmd:"" default:"1" help:"Show your balances."`
	History walletHistoryCmd `cmd:"" help:"List your transfers, newest first."`
	Deposit walletDepositCmd `cmd:"" help:"Credit tokens to an account (admins only)."`
	Faucet  walletFaucetCmd  `cmd:"" help:"Get demo tokens (dev mode only)."`

	Withdraw    walletWithdrawCmd    `cmd:"" help:"Withdraw settled earnings (queued for an admin to pay out)."`
	Withdrawals walletWithdrawalsCmd `cmd:"" help:"List your withdrawals."`
	Refunds     walletRefundsCmd     `cmd:"" help:"List refunds you received (host downtime)."`
	Statement   walletStatementCmd   `cmd:"" help:"Your monthly statement, as a table, CSV or JSON."`
	Pay         walletPayCmd         `cmd:"" help:"Pay a host in the platform token or a project asset."`
	Limits      walletLimitsCmd      `cmd:"" help:"Show or set your spend cap per hour and spend alert."`
}

type walletLimitsCmd struct {
	MaxPerHour string `placeholder:"TOKENS" help:"Refuse rentals and bids that would make your instances and open bids cost more than this per hour (0: no cap)."`
	AlertAt    string `placeholder:"TOKENS" help:"Raise a wallet.spend_alert event when you spent this much in the last hour (0: no alert)."`
	Webhook    string `placeholder:"URL" help:"Also POST spend alerts to this URL (\"-\" removes it)."`
}

func (c *walletLimitsCmd) Help() string {
	return `Without flags, shows your limits, what your instances and open bids cost per
hour and what you spent in the last hour. Flags change only what they name.

Examples:
  gpumarket wallet limits
  gpumarket wallet limits --max-per-hour 5 --alert-at 3
  gpumarket wallet limits --alert-at 3 --webhook https://example.com/gpumarket-alerts
  gpumarket wallet limits --max-per-hour 0`
}

func (c *walletLimitsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	st, err := api.SpendStatus(ctx)
	if err != nil {
		return err
	}
	if c.MaxPerHour != "" || c.AlertAt != "" || c.Webhook != "" {
		l := st.Limits
		for _, f := range []struct {
			flag, val string
			dst       *market.Money
		}{{"--max-per-hour", c.MaxPerHour, &l.MaxPerHour}, {"--alert-at", c.AlertAt, &l.AlertAt}} {
			if f.val == "" {
				continue
			}
			v, err := market.ParseMoney(f.val)
			if err != nil || v < 0 {
				return usagef("%s %q: give a number of tokens, 0 or more", f.flag, f.val)
			}
			*f.dst = v
		}
		switch c.Webhook {
		case "":
		case "-":
			l.Webhook = ""
		default:
			l.Webhook = c.Webhook
		}
		if st, err = api.SetSpendLimits(ctx, l); err != nil {
			return err
		}
	}
	if env.JSON() {
		return env.printJSON(st)
	}
	off := func(m market.Money, unit string) string {
		if m == 0 {
			return "none"
		}
		return money(m, st.Asset) + unit
	}
	t := newTable(env.Stdout)
	t.row("Cap:", off(st.Limits.MaxPerHour, " per hour"))
	t.row("Alert at:", off(st.Limits.AlertAt, " spent in an hour"))
	t.row("Webhook:", dash(st.Limits.Webhook))
	t.row("Now:", money(st.RatePerHour, st.Asset)+" per hour (instances and open bids)")
	t.row("Last hour:", money(st.SpentLastHour, st.Asset)+" spent")
	if st.AlertedAt != nil {
		t.row("Last alert:", env.time(*st.AlertedAt))
	}
	return t.flush()
}

type walletStatementCmd struct {
	Month  string `placeholder:"YYYY-MM" help:"The month, in UTC (default: this month)."`
	Format string `enum:"table,csv,json" default:"table" help:"table, csv or json (-o json works too)."`
}

func (c *walletStatementCmd) Help() string {
	return `Lists every movement of your accounts in the month with its reason and
instance (charges of consecutive minutes of an instance as one line with
the minute range), and each account's opening and closing balance per
asset.

Examples:
  gpumarket wallet statement --month 2026-11
  gpumarket wallet statement --month 2026-11 --format csv > statement-2026-11.csv`
}

func (c *walletStatementCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	month := c.Month
	if month == "" {
		month = time.Now().UTC().Format("2006-01")
	}
	if _, err := time.Parse("2006-01", month); err != nil {
		return usagef("--month %q: write it as YYYY-MM, like 2026-11", month)
	}
	st, err := api.Statement(ctx, month)
	if err != nil {
		return err
	}
	switch {
	case env.JSON() || c.Format == "json":
		return env.printJSON(st)
	case c.Format == "csv":
		return writeStatementCSV(env.Stdout, st)
	}
	fmt.Fprintf(env.Stdout, "Statement of %s for %s (%s to %s UTC)\n\n", st.Month, st.Account, st.From.Format(time.DateOnly), st.To.Format(time.DateOnly))
	t := newTable(env.Stdout, "ASSET", "ACCOUNT", "OPENING", "IN", "OUT", "CLOSING")
	for _, b := range st.Balances {
		t.row(string(b.Asset), string(b.Account), b.Opening.String(), b.In.String(), b.Out.String(), b.Closing.String())
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout, "SEQ", "TIME", "KIND", "ACCOUNT", "AMOUNT", "INSTANCE", "MINUTES", "REASON")
	for _, l := range st.Lines {
		mins := "-"
		if l.ToMinute > l.FromMinute {
			mins = fmt.Sprintf("%d-%d", l.FromMinute, l.ToMinute-1)
		}
		t.row(strconv.FormatInt(l.Seq, 10), env.time(l.At), string(l.Kind), string(l.Account), money(l.Amount, l.Asset),
			dash(string(l.Instance)), mins, dash(l.Reason))
	}
	return t.flush()
}

// writeStatementCSV writes the balances, a blank line, then the lines, each
// block with its header row; amounts in tokens with six decimals at most.
func writeStatementCSV(w io.Writer, st market.WalletStatement) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"month", "asset", "account", "opening", "in", "out", "closing"})
	for _, b := range st.Balances {
		cw.Write([]string{st.Month, string(b.Asset), string(b.Account), b.Opening.String(), b.In.String(), b.Out.String(), b.Closing.String()})
	}
	cw.Write(nil)
	cw.Write([]string{"seq", "time", "kind", "asset", "account", "amount", "instance", "first_minute", "last_minute", "reason"})
	for _, l := range st.Lines {
		from, to := "", ""
		if l.ToMinute > l.FromMinute {
			from, to = strconv.FormatInt(l.FromMinute, 10), strconv.FormatInt(l.ToMinute-1, 10)
		}
		cw.Write([]string{strconv.FormatInt(l.Seq, 10), l.At.UTC().Format(time.RFC3339), string(l.Kind), string(l.Asset), string(l.Account),
			l.Amount.String(), string(l.Instance), from, to, l.Reason})
	}
	cw.Flush()
	return cw.Error()
}

type walletShowCmd struct{}

func (c *walletShowCmd) Help() string {
	return `Examples:
  gpumarket wallet show
  gpumarket wallet show -o json`
}

func (c *walletShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	w, err := api.Wallet(ctx)
	if err != nil {
		return err
	}
	return printWallet(env, w)
}

func printWallet(env *Env, w market.Wallet) error {
	if env.JSON() {
		return env.printJSON(w)
	}
	if len(w.Assets) == 0 {
		t := newTable(env.Stdout)
		t.row("Available:", money(w.Available, w.Asset))
		t.row("In escrow:", money(w.Escrow, w.Asset))
		t.row("Earnings:", money(w.Earnings, w.Asset))
		return t.flush()
	}
	t := newTable(env.Stdout, "ASSET", "AVAILABLE", "IN ESCROW", "EARNINGS")
	t.row(string(w.Asset), w.Available.String(), w.Escrow.String(), w.Earnings.String())
	for _, a := range w.Assets {
		t.row(string(a.Asset), a.Available.String(), a.Escrow.String(), a.Earnings.String())
	}
	return t.flush()
}

type walletHistoryCmd struct {
	Limit  int   `default:"20" placeholder:"N" help:"Show at most N transfers."`
	Before int64 `placeholder:"SEQ" help:"Show transfers older than SEQ, to page back."`
}

func (c *walletHistoryCmd) Help() string {
	return `Examples:
  gpumarket wallet history
  gpumarket wallet history --limit 100 --before 5120`
}

func (c *walletHistoryCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if c.Limit < 1 {
		return usagef("--limit %d: show at least 1", c.Limit)
	}
	hs, err := api.History(ctx, c.Before, c.Limit)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(hs)
	}
	t := newTable(env.Stdout, "SEQ", "TIME", "KIND", "ACCOUNT", "AMOUNT", "INSTANCE", "MEMO")
	for _, h := range hs {
		t.row(strconv.FormatInt(h.Seq, 10), env.time(h.At), string(h.Kind), string(h.Account),
			money(h.Amount, h.Asset), dash(string(h.Instance)), dash(h.Memo))
	}
	return t.flush()
}

type walletDepositCmd struct {
	Email          string `required:"" help:"Email of the account to credit."`
	Amount         string `arg:"" placeholder:"AMOUNT" help:"Tokens to credit, up to 6 decimals."`
	Memo           string `help:"Note stored with the transfer."`
	Asset          string `default:"GMT" help:"The asset to credit: the platform token or a project asset (see 'admin asset list')."`
	IdempotencyKey string `name:"idempotency-key" placeholder:"KEY" help:"Makes a retried deposit happen once (default: a random key, printed)."`
}

func (c *walletDepositCmd) Help() string {
	return `Examples:
  gpumarket wallet deposit --email ada@example.com 100
  gpumarket wallet deposit --email ada@example.com 12.5 --idempotency-key invoice-2041`
}

func (c *walletDepositCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	amt, err := market.ParseMoney(c.Amount)
	if err != nil {
		return usagef("%v", err)
	}
	if amt <= 0 {
		return usagef("amount %s must be more than 0", c.Amount)
	}
	key := c.IdempotencyKey
	if key == "" {
		key = "cli-" + market.RandomToken(16)
	}
	req := market.DepositRequest{Email: c.Email, Amount: amt, Memo: c.Memo}
	if c.Asset != string(market.DefaultAsset) {
		req.Asset = market.Asset(c.Asset)
	}
	tr, err := api.Deposit(ctx, req, key)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(tr)
	}
	fmt.Fprintf(env.Stdout, "Deposited %s to %s (transfer %s, idempotency key %s).\n",
		money(amt, tr.Asset), c.Email, tr.ID, key)
	return nil
}

type walletFaucetCmd struct{}

func (c *walletFaucetCmd) Help() string {
	return `Only a coordinator started with 'gpumarket dev' has a faucet.

Example:
  gpumarket wallet faucet`
}

func (c *walletFaucetCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	w, err := api.Faucet(ctx)
	if err != nil {
		return err
	}
	return printWallet(env, w)
}

type earningsCmd struct{}

func (c *earningsCmd) Help() string {
	return `Shows the billed minutes per machine and per day (paid in the platform
token), then your earnings in each asset: pending ones settle after the
coordinator's settlement delay and can then be withdrawn with
'gpumarket wallet withdraw AMOUNT --asset ASSET'.

Examples:
  gpumarket earnings
  gpumarket earnings -o json`
}

func (c *earningsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	r, err := api.Earnings(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(r)
	}
	t := newTable(env.Stdout, "MACHINE", "MINUTES", "GPU-MINUTES", "EARNED", "PENDING")
	for _, m := range r.Machines {
		t.row(string(m.Machine), strconv.FormatInt(m.Minutes, 10), strconv.FormatInt(m.GPUMinutes, 10), money(m.Amount, r.Asset), money(m.Pending, r.Asset))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout, "DAY (UTC)", "MINUTES", "GPU-MINUTES", "EARNED", "PENDING")
	for _, d := range r.Days {
		t.row(d.Day, strconv.FormatInt(d.Minutes, 10), strconv.FormatInt(d.GPUMinutes, 10), money(d.Amount, r.Asset), money(d.Pending, r.Asset))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	assets := r.Assets
	if len(assets) == 0 { // a coordinator from before per-asset earnings
		assets = []market.AssetEarnings{{Asset: r.Asset, Total: r.Total, Pending: r.Pending, Withdrawable: r.Withdrawable, Withdrawing: r.Withdrawing}}
	}
	t = newTable(env.Stdout, "ASSET", "EARNINGS", "PENDING", "WITHDRAWABLE", "BEING WITHDRAWN")
	for _, a := range assets {
		t.row(string(a.Asset), a.Total.String(), a.Pending.String(), a.Withdrawable.String(), a.Withdrawing.String())
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "\nPending earnings settle %s after they were earned; then withdraw them with 'gpumarket wallet withdraw'.\n", r.SettlementDelay)
	return nil
}

type eventsCmd struct {
	Instance string `placeholder:"ID" help:"Only events of this instance."`
	Machine  string `placeholder:"ID" help:"Only events of this machine."`
	Limit    int    `default:"50" placeholder:"N" help:"Show at most N events."`
}

func (c *eventsCmd) Help() string {
	return `Examples:
  gpumarket events
  gpumarket events --instance i-0a1b2c3d4e5f
  gpumarket events --machine m-0a1b2c3d4e5f --limit 200 -o json`
}

func (c *eventsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	if c.Limit < 1 {
		return usagef("--limit %d: show at least 1", c.Limit)
	}
	evs, err := api.Events(ctx, apiclient.EventQuery{Instance: market.InstanceID(c.Instance),
		Machine: market.MachineID(c.Machine), Limit: c.Limit})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(evs)
	}
	t := newTable(env.Stdout, "SEQ", "TIME", "TYPE", "MACHINE", "INSTANCE", "MESSAGE")
	for _, e := range evs {
		t.row(strconv.FormatInt(e.Seq, 10), env.time(e.At), e.Type, dash(string(e.Machine)),
			dash(string(e.Instance)), e.Message)
	}
	return t.flush()
}

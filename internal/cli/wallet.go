package cli

import (
	"context"
	"fmt"
	"strconv"

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
	t := newTable(env.Stdout)
	t.row("Available:", money(w.Available, w.Asset))
	t.row("In escrow:", money(w.Escrow, w.Asset))
	t.row("Earnings:", money(w.Earnings, w.Asset))
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
			money(h.Amount, ""), dash(string(h.Instance)), dash(h.Memo))
	}
	return t.flush()
}

type walletDepositCmd struct {
	Email          string `required:"" help:"Email of the account to credit."`
	Amount         string `arg:"" placeholder:"AMOUNT" help:"Tokens to credit, up to 6 decimals."`
	Memo           string `help:"Note stored with the transfer."`
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
	tr, err := api.Deposit(ctx, market.DepositRequest{Email: c.Email, Amount: amt, Memo: c.Memo}, key)
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
	return `Examples:
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
	t := newTable(env.Stdout, "MACHINE", "GPU-MINUTES", "EARNED", "PENDING")
	for _, m := range r.Machines {
		t.row(string(m.Machine), strconv.FormatInt(m.Minutes, 10), money(m.Amount, r.Asset), money(m.Pending, r.Asset))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout, "DAY (UTC)", "GPU-MINUTES", "EARNED", "PENDING")
	for _, d := range r.Days {
		t.row(d.Day, strconv.FormatInt(d.Minutes, 10), money(d.Amount, r.Asset), money(d.Pending, r.Asset))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	t = newTable(env.Stdout)
	t.row("Earnings:", money(r.Total, r.Asset))
	t.row("Pending:", money(r.Pending, r.Asset)+" (settles "+r.SettlementDelay+" after it was earned)")
	t.row("Withdrawable:", money(r.Withdrawable, r.Asset))
	t.row("Being withdrawn:", money(r.Withdrawing, r.Asset))
	return t.flush()
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

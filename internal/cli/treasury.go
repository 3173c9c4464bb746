package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// idemFlag is the --idempotency-key of a command that moves money.
type idemFlag struct {
	IdempotencyKey string `name:"idempotency-key" placeholder:"KEY" help:"Makes a retried call happen once (default: a random key per call, printed)."`
}

func (f idemFlag) key() string {
	if f.IdempotencyKey != "" {
		return f.IdempotencyKey
	}
	return "cli-" + market.RandomToken(16)
}

// parseAmount reads a positive token amount argument.
func parseAmount(s string) (market.Money, error) {
	amt, err := market.ParseMoney(s)
	if err != nil {
		return 0, usagef("%v", err)
	}
	if amt <= 0 {
		return 0, usagef("amount %s must be more than 0", s)
	}
	return amt, nil
}

type walletWithdrawCmd struct {
	Amount string `arg:"" placeholder:"AMOUNT" help:"Tokens to withdraw from your settled earnings."`
	idemFlag
}

func (c *walletWithdrawCmd) Help() string {
	return `Earnings become withdrawable after the coordinator's settlement delay
(see 'gpumarket earnings'). The amount is held until an admin pays it out
or rejects it (the money then returns to your earnings).

Examples:
  gpumarket wallet withdraw 25
  gpumarket wallet withdraw 25 --idempotency-key payout-2026-03`
}

func (c *walletWithdrawCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	amt, err := parseAmount(c.Amount)
	if err != nil {
		return err
	}
	key := c.key()
	w, err := api.Withdraw(ctx, market.WithdrawRequest{Amount: amt}, key)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(w)
	}
	fmt.Fprintf(env.Stdout, "Withdrawal %s of %s queued (idempotency key %s).\n", w.ID, money(w.Amount, w.Asset), key)
	return nil
}

type walletWithdrawalsCmd struct {
	State string `enum:",pending,completed,rejected" default:"" help:"Only withdrawals in this state."`
}

func (c *walletWithdrawalsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	ws, err := api.Withdrawals(ctx, false, market.WithdrawalState(c.State))
	if err != nil {
		return err
	}
	return printWithdrawals(env, ws)
}

func printWithdrawals(env *Env, ws []market.Withdrawal) error {
	if env.JSON() {
		return env.printJSON(ws)
	}
	t := newTable(env.Stdout, "ID", "ACCOUNT", "AMOUNT", "STATE", "CREATED", "DECIDED", "REASON")
	for _, w := range ws {
		t.row(string(w.ID), string(w.Account), money(w.Amount, w.Asset), string(w.State), env.time(w.CreatedAt), env.timePtr(w.DecidedAt), dash(w.Reason))
	}
	return t.flush()
}

type adminCmd struct {
	Ledger      adminLedgerCmd      `cmd:"" help:"Check the ledger."`
	Withdrawals adminWithdrawalsCmd `cmd:"" help:"Complete or reject queued withdrawals."`
}

type adminLedgerCmd struct {
	Check adminLedgerCheckCmd `cmd:"" help:"Check every ledger invariant and print each result."`
}

type adminLedgerCheckCmd struct{}

func (c *adminLedgerCheckCmd) Help() string {
	return `Exits with status 1 when an invariant is broken.

Examples:
  gpumarket admin ledger check
  gpumarket admin ledger check -o json`
}

func (c *adminLedgerCheckCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	r, err := api.LedgerCheck(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		if err := env.printJSON(r); err != nil {
			return err
		}
	} else {
		t := newTable(env.Stdout, "RESULT", "INVARIANT")
		broken := 0
		for _, ch := range r.Checks {
			res := "ok"
			if !ch.OK {
				res = "BROKEN"
				broken++
			}
			t.row(res, ch.Name)
			for _, d := range ch.Details {
				t.row("", "  "+d)
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%d transfers checked, %d of %d invariants broken.\n", r.Transfers, broken, len(r.Checks))
	}
	if !r.OK {
		return fmt.Errorf("the ledger check found broken invariants")
	}
	return nil
}

type adminWithdrawalsCmd struct {
	List     adminWithdrawalsListCmd     `cmd:"" default:"1" help:"List withdrawals (pending by default)."`
	Complete adminWithdrawalsCompleteCmd `cmd:"" help:"Pay out a pending withdrawal."`
	Reject   adminWithdrawalsRejectCmd   `cmd:"" help:"Reject a pending withdrawal; the money returns to the host."`
}

type adminWithdrawalsListCmd struct {
	State string `enum:"pending,completed,rejected,all" default:"pending" help:"pending, completed, rejected or all."`
}

func (c *adminWithdrawalsListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	state := market.WithdrawalState(c.State)
	if c.State == "all" {
		state = ""
	}
	ws, err := api.Withdrawals(ctx, true, state)
	if err != nil {
		return err
	}
	return printWithdrawals(env, ws)
}

type adminWithdrawalsCompleteCmd struct {
	ID string `arg:"" placeholder:"ID" help:"The withdrawal (w-...)."`
	idemFlag
}

func (c *adminWithdrawalsCompleteCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	w, err := api.CompleteWithdrawal(ctx, market.WithdrawalID(c.ID), c.key())
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(w)
	}
	fmt.Fprintf(env.Stdout, "Withdrawal %s of %s paid out to %s.\n", w.ID, money(w.Amount, w.Asset), w.Account)
	return nil
}

type adminWithdrawalsRejectCmd struct {
	ID     string `arg:"" placeholder:"ID" help:"The withdrawal (w-...)."`
	Reason string `required:"" help:"Why; the host sees it."`
	idemFlag
}

func (c *adminWithdrawalsRejectCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	w, err := api.RejectWithdrawal(ctx, market.WithdrawalID(c.ID), c.Reason, c.key())
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(w)
	}
	fmt.Fprintf(env.Stdout, "Withdrawal %s of %s rejected; the money is back in %s's earnings.\n", w.ID, money(w.Amount, w.Asset), w.Account)
	return nil
}

type stakeCmd struct {
	Show      stakeShowCmd      `cmd:"" default:"1" help:"Show your stake and cooldowns."`
	Add       stakeAddCmd       `cmd:"" help:"Stake tokens from your available balance."`
	Remove    stakeRemoveCmd    `cmd:"" help:"Unstake tokens; they return after the cooldown."`
	Statement stakeStatementCmd `cmd:"" help:"Show dividend statements: fees in, shares, payouts."`
}

type stakeShowCmd struct{}

func (c *stakeShowCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	in, err := api.Stake(ctx)
	if err != nil {
		return err
	}
	return printStake(env, in)
}

func printStake(env *Env, in market.StakeInfo) error {
	if env.JSON() {
		return env.printJSON(in)
	}
	t := newTable(env.Stdout)
	t.row("Staked:", money(in.Staked, in.Asset))
	t.row("Unstaking:", money(in.Unstaking, in.Asset))
	t.row("Total staked:", money(in.TotalStaked, in.Asset))
	t.row("Dividends received:", money(in.Dividends, in.Asset))
	for _, u := range in.Unstakes {
		t.row("Cooldown:", money(u.Amount, in.Asset)+" returns at "+env.time(u.ReleaseAt))
	}
	return t.flush()
}

type stakeAddCmd struct {
	Amount string `arg:"" placeholder:"AMOUNT" help:"Tokens to stake."`
	idemFlag
}

func (c *stakeAddCmd) Help() string {
	return `Each distribution period the platform fees collected are paid to stakers
pro rata to stake-time (stake x time staked in the period).

Example:
  gpumarket stake add 100`
}

func (c *stakeAddCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	amt, err := parseAmount(c.Amount)
	if err != nil {
		return err
	}
	in, err := api.AddStake(ctx, amt, c.key())
	if err != nil {
		return err
	}
	return printStake(env, in)
}

type stakeRemoveCmd struct {
	Amount string `arg:"" placeholder:"AMOUNT" help:"Tokens to unstake."`
	idemFlag
}

func (c *stakeRemoveCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	amt, err := parseAmount(c.Amount)
	if err != nil {
		return err
	}
	u, err := api.RemoveStake(ctx, amt, c.key())
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(u)
	}
	fmt.Fprintf(env.Stdout, "Unstaked %s; it earns nothing from now and returns to your balance at %s.\n", money(u.Amount, ""), env.time(u.ReleaseAt))
	return nil
}

type stakeStatementCmd struct {
	Period int64 `default:"-1" placeholder:"N" help:"One period (default: the latest)."`
	Limit  int   `default:"1" placeholder:"N" help:"Show the latest N statements."`
}

func (c *stakeStatementCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	sts, err := api.Statements(ctx, c.Period, c.Limit)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(sts)
	}
	if len(sts) == 0 {
		fmt.Fprintln(env.Stdout, "No dividends distributed yet.")
		return nil
	}
	for i, st := range sts {
		if i > 0 {
			fmt.Fprintln(env.Stdout)
		}
		t := newTable(env.Stdout)
		t.row("Period:", strconv.FormatInt(st.Period, 10)+"  "+env.time(st.Start)+" to "+env.time(st.End))
		t.row("Fees in:", money(st.FeesIn, st.Asset))
		t.row("Carried in:", money(st.CarriedIn, st.Asset))
		t.row("Paid:", money(st.Paid, st.Asset))
		t.row("Carried out:", money(st.CarriedOut, st.Asset))
		if err := t.flush(); err != nil {
			return err
		}
		t = newTable(env.Stdout, "STAKER", "STAKE-TIME (µGMT·µs)", "PAYOUT")
		for _, sh := range st.Shares {
			t.row(string(sh.Account), sh.StakeTime, money(sh.Payout, st.Asset))
		}
		if len(st.Shares) == 0 {
			t.row(strings.Repeat("-", 1), "nobody staked", "")
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return nil
}

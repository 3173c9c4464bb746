package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

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
	Asset  string `default:"GMT" help:"The asset to withdraw: the platform token or a project asset you earned (see 'gpumarket earnings')."`
	idemFlag
}

func (c *walletWithdrawCmd) Help() string {
	return `Earnings become withdrawable after the coordinator's settlement delay
(see 'gpumarket earnings'), in every asset alike. The amount is held until
an admin pays it out or rejects it (the money then returns to your
earnings).

Examples:
  gpumarket wallet withdraw 25
  gpumarket wallet withdraw 25 --idempotency-key payout-2026-03
  gpumarket wallet withdraw 100 --asset DPN`
}

func (c *walletWithdrawCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	amt, err := parseAmount(c.Amount)
	if err != nil {
		return err
	}
	req := market.WithdrawRequest{Amount: amt}
	if a := market.Asset(c.Asset); a != market.DefaultAsset {
		req.Asset = a // the platform token goes unnamed, as to older coordinators
	}
	key := c.key()
	w, err := api.Withdraw(ctx, req, key)
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
	Refund      adminRefundCmd      `cmd:"" help:"Refund renters for host downtime, and list refunds."`
	Asset       adminAssetCmd       `cmd:"" help:"Create and list project assets (tokens)."`
	Pool        adminPoolCmd        `cmd:"" help:"Capacity pools for deployments: shares, machines, use against quota."`
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

type adminRefundCmd struct {
	Create adminRefundCreateCmd `cmd:"" default:"withargs" help:"Refund a renter for minutes of an instance."`
	List   adminRefundListCmd   `cmd:"" help:"List refunds."`
}

type adminRefundCreateCmd struct {
	Instance string    `arg:"" placeholder:"INSTANCE" help:"The instance (i-...) whose minutes are refunded."`
	Minutes  string    `placeholder:"FIRST-LAST" help:"Billing minutes to refund, counted from the instance's start: 3-9 (both included) or 7."`
	Since    time.Time `placeholder:"RFC3339" help:"Instead of --minutes: refund every minute that overlaps --since to --until (the downtime)."`
	Until    time.Time `placeholder:"RFC3339" help:"End of the downtime, with --since."`
	Reason   string    `required:"" help:"Why; the renter and the host see it."`
	idemFlag
}

func (c *adminRefundCreateCmd) Help() string {
	return `The renter gets back what those minutes were charged. The money comes from
the host's unsettled earnings first (earnings still in the settlement
delay), then from the platform's fees of the current distribution period;
never from nowhere: a refund the two cannot cover is refused. Only charged
minutes are refunded, each once.

Examples:
  gpumarket admin refund i-0a1b2c3d4e5f --minutes 30-44 --reason "host offline 14:30-14:45"
  gpumarket admin refund create i-0a1b2c3d4e5f --since 2026-11-23T14:30:00Z --until 2026-11-23T14:45:00Z --reason "host offline"`
}

func (c *adminRefundCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	req := market.RefundRequest{Instance: market.InstanceID(c.Instance), Reason: c.Reason}
	switch {
	case c.Minutes != "" && (!c.Since.IsZero() || !c.Until.IsZero()):
		return usagef("give --minutes or --since and --until, not both")
	case c.Minutes != "":
		first, last, err := parseMinuteRange(c.Minutes)
		if err != nil {
			return err
		}
		req.FromMinute, req.ToMinute = first, last+1
	case c.Since.IsZero() || c.Until.IsZero():
		return usagef("say which minutes to refund: --minutes FIRST-LAST, or --since and --until")
	default:
		req.Since, req.Until = &c.Since, &c.Until
	}
	key := c.key()
	r, err := api.Refund(ctx, req, key)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(r)
	}
	fmt.Fprintf(env.Stdout, "Refund %s: %s for %d minutes (%d to %d) of %s paid back to %s: %s from the host's earnings, %s from the platform (idempotency key %s).\n",
		r.ID, money(r.Amount, r.Asset), r.Minutes, r.FromMinute, r.ToMinute-1, r.Instance, r.Renter, money(r.FromHost, r.Asset), money(r.FromPlatform, r.Asset), key)
	return nil
}

// parseMinuteRange reads "3-9" (both included) or "7".
func parseMinuteRange(s string) (first, last int64, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	first, err1 := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	last, err2 := strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, usagef("--minutes %q: write FIRST-LAST with 0 <= FIRST <= LAST, like 30-44, or one minute, like 7", s)
	}
	return first, last, nil
}

type adminRefundListCmd struct {
	Instance string `placeholder:"ID" help:"Only refunds of this instance."`
}

func (c *adminRefundListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	rs, err := api.Refunds(ctx, true, market.InstanceID(c.Instance))
	if err != nil {
		return err
	}
	return printRefunds(env, rs)
}

func printRefunds(env *Env, rs []market.Refund) error {
	if env.JSON() {
		return env.printJSON(rs)
	}
	t := newTable(env.Stdout, "ID", "TIME", "INSTANCE", "MINUTES", "AMOUNT", "FROM HOST", "FROM PLATFORM", "BY", "REASON")
	for _, r := range rs {
		by := string(r.By)
		if by == "" {
			by = "coordinator"
		}
		t.row(string(r.ID), env.time(r.At), string(r.Instance), fmt.Sprintf("%d-%d", r.FromMinute, r.ToMinute-1),
			money(r.Amount, r.Asset), money(r.FromHost, r.Asset), money(r.FromPlatform, r.Asset), by, r.Reason)
	}
	return t.flush()
}

type walletRefundsCmd struct {
	Instance string `placeholder:"ID" help:"Only refunds of this instance."`
}

func (c *walletRefundsCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	rs, err := api.Refunds(ctx, false, market.InstanceID(c.Instance))
	if err != nil {
		return err
	}
	return printRefunds(env, rs)
}

type adminAssetCmd struct {
	Create adminAssetCreateCmd `cmd:"" help:"Create a project asset; credit it with 'wallet deposit --asset'."`
	List   adminAssetListCmd   `cmd:"" default:"1" help:"List the platform token and the project assets."`
}

type adminAssetCreateCmd struct {
	Name        string `arg:"" placeholder:"NAME" help:"2 to 12 capital letters or digits, like DPN."`
	Description string `help:"What the token is for."`
}

func (c *adminAssetCreateCmd) Help() string {
	return `A project asset is a token of its own (for example a DePIN project's
rewards): it balances separately from the platform token in every ledger
invariant. Credit it to an account with 'wallet deposit --asset NAME';
projects pay hosts in it with 'wallet pay --asset NAME'.

Example:
  gpumarket admin asset create DPN --description "DePIN project rewards"
  gpumarket wallet deposit --email project@example.com --asset DPN 100000`
}

func (c *adminAssetCreateCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	a, err := api.CreateAsset(ctx, market.CreateAssetRequest{Name: market.Asset(c.Name), Description: c.Description})
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(a)
	}
	fmt.Fprintf(env.Stdout, "Project asset %s created.\n", a.Name)
	return nil
}

type adminAssetListCmd struct{}

func (c *adminAssetListCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	as, err := api.Assets(ctx)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(as)
	}
	t := newTable(env.Stdout, "ASSET", "KIND", "CREATED", "DESCRIPTION")
	for _, a := range as {
		created := "-"
		if !a.CreatedAt.IsZero() {
			created = env.time(a.CreatedAt)
		}
		t.row(string(a.Name), string(a.Kind), created, dash(a.Description))
	}
	return t.flush()
}

type walletPayCmd struct {
	Host     string `required:"" placeholder:"ACCOUNT" help:"The host's account ID (a-...)."`
	Amount   string `arg:"" placeholder:"AMOUNT" help:"How much, up to 6 decimals."`
	Asset    string `default:"GMT" help:"The asset to pay in: the platform token or a project asset."`
	Instance string `placeholder:"ID" help:"The instance the payment is for, if any."`
	Memo     string `help:"Note stored with the transfer."`
	idemFlag
}

func (c *walletPayCmd) Help() string {
	return `Moves tokens from your available balance to the host's earnings, in the
platform token or a project asset (a DePIN project rewarding hosts).

Example:
  gpumarket wallet pay --host a-0a1b2c3d4e5f --asset DPN 250 --memo "rewards, week 47"`
}

func (c *walletPayCmd) Run(ctx context.Context, env *Env, api *apiclient.Client) error {
	amt, err := parseAmount(c.Amount)
	if err != nil {
		return err
	}
	key := c.key()
	tr, err := api.PayHost(ctx, market.PayRequest{Host: market.AccountID(c.Host), Asset: market.Asset(c.Asset), Amount: amt,
		Instance: market.InstanceID(c.Instance), Memo: c.Memo}, key)
	if err != nil {
		return err
	}
	if env.JSON() {
		return env.printJSON(tr)
	}
	fmt.Fprintf(env.Stdout, "Paid %s to %s (transfer %d, idempotency key %s).\n", money(amt, tr.Asset), c.Host, tr.Seq, key)
	return nil
}

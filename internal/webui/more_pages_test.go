package webui

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/auction"
	"github.com/gpumarket/gpumarket/internal/market"
)

// admin makes an operator account in the fake and logs it in.
func (u *ui) admin() (cookie, csrf string) {
	u.t.Helper()
	u.svc.accounts["ops@example.com"] = market.Account{ID: "a-ops", Email: "ops@example.com", Roles: []market.Role{market.RoleAdmin}}
	u.svc.passwords["ops@example.com"] = "password-1"
	rec := u.post("", "", "/login", url.Values{"email": {"ops@example.com"}, "password": {"password-1"}})
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie {
			_, secret, _ := strings.Cut(c.Value, ".")
			return c.Value, csrfToken(secret)
		}
	}
	u.t.Fatalf("admin log in: %d", rec.Code)
	return "", ""
}

// idem returns the idempotency key of the first money form of a page.
func idem(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`name="idem" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no idempotency key in the page:\n%s", body)
	}
	return m[1]
}

func TestKeysPage(t *testing.T) {
	u := newUI(t)
	check(t, u.get(u.cookie, "/account"), 200, `id="keys"`, "web session", `id="create-key"`)
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		want   string
	}{
		{"no name", url.Values{"name": {" "}}, 400, "give the key a name"},
		{"long name", url.Values{"name": {strings.Repeat("k", 65)}}, 400, "longer than 64"},
		{"control characters", url.Values{"name": {"a\x07b"}}, 400, "control characters"},
		{"taken", url.Values{"name": {"taken"}}, 409, "named &#34;taken&#34; already"},
		{"escaped", url.Values{"name": {"<b>x</b>"}}, 200, "&lt;b&gt;x&lt;/b&gt;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check(t, u.post(u.cookie, u.csrf, "/account/keys", tc.form), tc.status, tc.want)
		})
	}
	rec := u.post(u.cookie, u.csrf, "/account/keys", url.Values{"name": {"laptop"}})
	check(t, rec, 200, `id="new-key"`, "not shown again")
	secret := regexp.MustCompile(`id="new-secret" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())
	if secret == nil || !strings.HasPrefix(secret[1], "gmk_") {
		t.Fatalf("the new secret is not shown:\n%s", rec.Body)
	}
	if strings.Contains(u.get(u.cookie, "/account").Body.String(), secret[1]) {
		t.Error("the secret is shown again after the first page")
	}
	var laptop market.APIKey
	for _, k := range u.svc.keys {
		if k.Name == "laptop" {
			laptop = k
		}
	}
	// Revoking another's key or an unknown one is not found; the session's
	// own key is refused; the new key is revoked.
	check(t, u.post(u.hostCk, u.hostTok, "/account/keys/"+string(laptop.ID)+"/revoke", nil), 404, "not found")
	check(t, u.post(u.cookie, u.csrf, "/account/keys/k-nope/revoke", nil), 404, "not found")
	sessID, _, _ := strings.Cut(u.cookie, ".")
	check(t, u.post(u.cookie, u.csrf, "/account/keys/"+sessID+"/revoke", nil), 400, "log out instead")
	check(t, u.post(u.cookie, "", "/account/keys/"+string(laptop.ID)+"/revoke", nil), 403, "Form expired")
	if rec := u.post(u.cookie, u.csrf, "/account/keys/"+string(laptop.ID)+"/revoke", nil); rec.Code != http.StatusSeeOther {
		t.Fatalf("revoke: %d\n%s", rec.Code, rec.Body)
	}
	check(t, u.get(u.cookie, "/account?flash=revoked"), 200, "Key revoked", "revoked</span>")
}

func TestBidsAndMarketPages(t *testing.T) {
	u := newUI(t)
	renter := u.svc.accounts["renter@example.com"]
	host := u.svc.accounts["host@example.com"]
	check(t, u.get(u.cookie, "/bids"), 200, "No bids yet")
	check(t, u.get(u.cookie, "/market"), 200, `id="snapshot"`, "no bids", "No rounds yet")

	won := market.Bid{ID: "b-won", Bidder: renter.ID, Machine: u.machine, GPUs: 2, PricePerGPUDay: market.Tokens(2), PowerLimitW: 300, State: market.BidWinning, Seq: 1, CreatedAt: time.Now()}
	lost := market.Bid{ID: "b-lost", Bidder: renter.ID, Machine: u.machine, GPUs: 1, PricePerGPUDay: market.Tokens(1), PowerLimitW: 200, State: market.BidActive, Seq: 2}
	u.svc.more().bids = []market.Bid{won, lost, {ID: "b-other", Bidder: "a-else", Machine: u.machine, GPUs: 1, PricePerGPUDay: market.Tokens(5), PowerLimitW: 200, State: market.BidActive, Seq: 3}}
	rd := fakeRound(u.machine, host.ID, won)
	md := &rd.Decision.Machines[0]
	md.Candidates = append(md.Candidates, auction.Candidate{Bid: "b-lost", Seq: 2, GPUs: 1, Profit: 1})
	u.svc.more().rounds = append(u.svc.more().rounds, rd)

	rec := u.get(u.cookie, "/bids")
	check(t, rec, 200, `id="bids"`, "b-won", `standing won`, "b-lost", `standing lost`, "the winners&#39; host profit was")
	if strings.Contains(rec.Body.String(), "b-other") {
		t.Error("the bids page shows another renter's bid")
	}
	// 2 GPUs x 2.00/day x 1 min = 0.002777; energy 2 x 300 W x 0.20/kWh x 1 min = 0.002; profit 0.000777.
	rec = u.get(u.cookie, "/market")
	check(t, rec, 200, `id="rounds"`, "<strong>(yours)</strong>", "income 2 GPU × 2.00/day × 1 min = 0.002777", "− energy 2 GPU × 300 W × 0.20/kWh × 1 min = 0.002<", "= host profit <strong>0.000777</strong>")
	if strings.Contains(rec.Body.String(), string(renter.ID)) {
		t.Error("the market page shows a bidder's account")
	}
	check(t, u.get(u.hostCk, "/market"), 200, "b-won")
	if strings.Contains(u.get(u.hostCk, "/market").Body.String(), "(yours)") {
		t.Error("the host's market page marks the renter's bid as the host's")
	}
	u.svc.broken = fmt.Errorf("store down")
	if rec := u.get(u.cookie, "/market"); rec.Code != http.StatusSeeOther { // Authenticate fails first
		t.Errorf("market with a broken store: %d", rec.Code)
	}
}

func TestWithdrawalsAndStakePages(t *testing.T) {
	u := newUI(t)
	host := u.svc.accounts["host@example.com"]
	w := u.svc.wallets[host.ID]
	w.Earnings = market.Tokens(5)
	u.svc.wallets[host.ID] = w
	body := u.get(u.hostCk, "/withdrawals").Body.String()
	key := idem(t, body)
	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
		want   string
	}{
		{"empty", url.Values{"amount": {""}, "idem": {key}}, 400, "enter an amount to withdraw"},
		{"not an amount", url.Values{"amount": {"lots"}, "idem": {key}}, 400, "&#34;lots&#34; is not an amount"},
		{"zero", url.Values{"amount": {"0"}, "idem": {key}}, 400, "above zero"},
		{"below minimum", url.Values{"amount": {"0.5"}, "idem": {key}}, 400, "smallest withdrawal"},
		{"too much", url.Values{"amount": {"9"}, "idem": {key}}, 402, "you can withdraw 5.00 now"},
		{"no key", url.Values{"amount": {"2"}}, 400, "reload the page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := u.post(u.hostCk, u.hostTok, "/withdrawals", tc.form)
			check(t, rec, tc.status, tc.want, `id="amount-error"`)
		})
	}
	if rec := u.post(u.hostCk, u.hostTok, "/withdrawals", url.Values{"amount": {"2"}, "idem": {key}}); rec.Code != http.StatusSeeOther {
		t.Fatalf("withdraw: %d\n%s", rec.Code, rec.Body)
	}
	check(t, u.get(u.hostCk, "/withdrawals?flash=withdrawn"), 200, `id="withdrawals"`, "2.00", "pending", "Payout requested")

	// Staking: errors next to their field; a resent form stakes once.
	key = idem(t, u.get(u.cookie, "/stake").Body.String())
	check(t, u.post(u.cookie, u.csrf, "/stake/add", url.Values{"stake": {"x"}, "idem": {key}}), 400, "is not an amount")
	check(t, u.post(u.cookie, u.csrf, "/stake/add", url.Values{"stake": {"50"}, "idem": {key}}), 402, "you have 10.00 available")
	check(t, u.post(u.cookie, u.csrf, "/stake/remove", url.Values{"unstake": {"1"}, "idem": {key}}), 400, "you have 0.00 staked")
	for range 2 {
		if rec := u.post(u.cookie, u.csrf, "/stake/add", url.Values{"stake": {"4"}, "idem": {key}}); rec.Code != http.StatusSeeOther {
			t.Fatalf("stake: %d\n%s", rec.Code, rec.Body)
		}
	}
	check(t, u.get(u.cookie, "/stake?flash=staked"), 200, `id="staked">4.00<`, "Staked.")
	check(t, u.post(u.cookie, "", "/stake/add", url.Values{"stake": {"1"}, "idem": {key}}), 403, "Form expired")
}

func TestAdminPages(t *testing.T) {
	u := newUI(t)
	for _, path := range []string{"/admin", "/admin/ledger", "/admin/withdrawals"} {
		check(t, u.get(u.cookie, path), 403, "for operators")
	}
	check(t, u.post(u.hostCk, u.hostTok, "/admin/withdrawals/w-1/complete", url.Values{"idem": {"k"}}), 403, "for operators")
	ck, tok := u.admin()
	u.svc.more().revenue = []market.DayRevenue{{Day: "2026-11-20"}, {Day: "2026-11-21", Fees: market.Tokens(1)}, {Day: "2026-11-22", Fees: market.Tokens(3)}}
	rec := u.get(ck, "/admin")
	check(t, rec, 200, `id="fleet"`, "RTX 4090", `id="online">1<`, `id="rented">0<`, `id="revenue-chart"`, "Nov 21: 1<", "Nov 22: 3<")
	if strings.Index(rec.Body.String(), "Nov 21") > strings.Index(rec.Body.String(), "Nov 22") {
		t.Error("revenue periods are not oldest first")
	}
	check(t, u.get(ck, "/admin/ledger"), 200, `id="ledger-ok"`, "42 transfers")
	u.svc.more().ledgerBad = true
	check(t, u.get(ck, "/admin/ledger"), 200, `id="ledger-bad"`, "-1.00 &lt;b&gt;")

	host := u.svc.accounts["host@example.com"]
	u.svc.more().withdrawals["w-1"] = market.Withdrawal{ID: "w-1", Account: host.ID, Amount: market.Tokens(2), State: market.WithdrawalPending}
	u.svc.more().withdrawals["w-2"] = market.Withdrawal{ID: "w-2", Account: host.ID, Amount: market.Tokens(3), State: market.WithdrawalPending}
	body := u.get(ck, "/admin/withdrawals").Body.String()
	key := idem(t, body)
	check(t, u.post(ck, tok, "/admin/withdrawals/w-1/reject", url.Values{"idem": {key}, "reason": {" "}}), 400, "say why it is rejected")
	check(t, u.post(ck, tok, "/admin/withdrawals/w-1/reject", url.Values{"idem": {key}, "reason": {strings.Repeat("x", 501)}}), 400, "longer than 500")
	check(t, u.post(ck, tok, "/admin/withdrawals/w-nope/complete", url.Values{"idem": {key}}), 404, "w-nope not found")
	check(t, u.post(ck, tok, "/admin/withdrawals/w-1/complete", nil), 400, "reload the page")
	if rec := u.post(ck, tok, "/admin/withdrawals/w-1/complete", url.Values{"idem": {key}}); rec.Code != http.StatusSeeOther {
		t.Fatalf("complete: %d\n%s", rec.Code, rec.Body)
	}
	check(t, u.post(ck, tok, "/admin/withdrawals/w-1/reject", url.Values{"idem": {key + "x"}, "reason": {"dup"}}), 409, `id="queue-error"`, "completed already")
	if rec := u.post(ck, tok, "/admin/withdrawals/w-2/reject", url.Values{"idem": {key}, "reason": {"wrong <address>"}}); rec.Code != http.StatusSeeOther {
		t.Fatalf("reject: %d\n%s", rec.Code, rec.Body)
	}
	check(t, u.get(ck, "/admin/withdrawals?flash=rejected"), 200, "No withdrawal is waiting", "back in the host")
	if got := u.svc.more().withdrawals["w-2"]; got.State != market.WithdrawalRejected || got.Reason != "wrong <address>" {
		t.Errorf("w-2 = %+v", got)
	}
}

func TestMachinePage(t *testing.T) {
	u := newUI(t)
	m := string(u.machine)
	check(t, u.get(u.hostCk, "/machines/"+m), 200, `id="settings-form"`, `value="0.50"`, `id="chart-util"`, "No spot rounds yet")
	check(t, u.get(u.cookie, "/machines/"+m), 404, "not found among your machines")
	check(t, u.get(u.hostCk, "/machines/m-nope"), 404, "not found")
	check(t, u.get(u.hostCk, "/machines/"+m+"?window=forever"), 400, "not offered")
	check(t, u.get(u.hostCk, "/machines/"+m+"/charts?window=15m"), 200, `id="chart-power"`)
	check(t, u.get(u.hostCk, "/machines/"+m+"/charts?window=2d"), 400, "not offered")
	check(t, u.get(u.cookie, "/machines/"+m+"/charts"), 404, "not found")
	check(t, u.get(u.hostCk, "/machines/m-nope/charts"), 404, "not found")
	ok := url.Values{"price": {"0.8"}, "reserve": {"1.5"}, "energy": {"0.25"}, "max_power": {"300"}, "region": {"eu"}, "datacenter": {"fra-1"}}
	for _, tc := range []struct {
		name   string
		change url.Values
		status int
		field  string
		want   string
	}{
		{"no price", url.Values{"price": {""}}, 400, "price", "enter a price per GPU-hour"},
		{"bad reserve", url.Values{"reserve": {"1,5"}}, 400, "reserve", "&#34;1,5&#34; is not an amount"},
		{"negative energy", url.Values{"energy": {"-1"}}, 400, "energy", "must be above zero"},
		{"power not a number", url.Values{"max_power": {"lots"}}, 400, "max_power", "whole number of watts"},
		{"region with spaces", url.Values{"region": {"eu west"}}, 400, "region", "one word"},
		{"price over the limit", url.Values{"price": {"2000000"}}, 400, "price", "above the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{}
			for k, v := range ok {
				form[k] = v
			}
			for k, v := range tc.change {
				form[k] = v
			}
			rec := u.post(u.hostCk, u.hostTok, "/machines/"+m+"/settings", form)
			check(t, rec, tc.status, tc.want)
			// The error sits right after its field.
			body := rec.Body.String()
			in := strings.Index(body, `id="`+tc.field+`"`)
			e := strings.Index(body, tc.want)
			if in < 0 || e < in || strings.Contains(body[in:e], "<label") {
				t.Errorf("the error is not next to field %s", tc.field)
			}
		})
	}
	check(t, u.post(u.cookie, u.csrf, "/machines/"+m+"/settings", ok), 404, "not found")
	if rec := u.post(u.hostCk, u.hostTok, "/machines/"+m+"/settings", ok); rec.Code != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", rec.Code, rec.Body)
	}
	check(t, u.get(u.hostCk, "/machines/"+m+"?flash=settings"), 200, "Settings saved", `value="0.80"`)
}

// TestEveryPostFormHasCSRF renders every page with forms and checks that
// each state-changing form carries the session's token.
func TestEveryPostFormHasCSRF(t *testing.T) {
	u := newUI(t)
	ck, tok := u.admin()
	host := u.svc.accounts["host@example.com"]
	u.svc.more().withdrawals["w-1"] = market.Withdrawal{ID: "w-1", Account: host.ID, Amount: market.Tokens(2), State: market.WithdrawalPending}
	for _, tc := range []struct{ cookie, csrf, path string }{
		{u.cookie, u.csrf, "/instances/" + string(u.inst)},
		{u.cookie, u.csrf, "/wallet"},
		{u.cookie, u.csrf, "/account"},
		{u.cookie, u.csrf, "/stake"},
		{u.cookie, u.csrf, "/rent/" + string(u.machine)},
		{u.hostCk, u.hostTok, "/machines"},
		{u.hostCk, u.hostTok, "/machines/" + string(u.machine)},
		{u.hostCk, u.hostTok, "/withdrawals"},
		{ck, tok, "/admin/withdrawals"},
	} {
		body := u.get(tc.cookie, tc.path).Body.String()
		n, m := strings.Count(body, `<form method="post"`), strings.Count(body, `name="csrf" value="`+tc.csrf+`"`)
		if n == 0 || n != m {
			t.Errorf("%s: %d post forms, %d with the token", tc.path, n, m)
		}
	}
}

func TestStatementDownload(t *testing.T) {
	u := newUI(t)
	check(t, u.get(u.cookie, "/wallet"), 200, `id="statement-form"`, `name="month"`)
	for _, tc := range []struct {
		query  string
		status int
		want   string
	}{
		{"month=", 400, "choose a month"},
		{"month=2026-13", 400, "write it as YYYY-MM"},
		{"month=2026-11-23", 400, "is not a month"},
		{"month=2026-11&format=pdf", 400, "csv or json"},
		{"month=" + url.QueryEscape("<b>"), 400, "&lt;b&gt;"},
	} {
		rec := u.get(u.cookie, "/wallet/statement?"+tc.query)
		check(t, rec, tc.status, tc.want, `id="month-error"`, "<h2>History</h2>")
	}
	rec := u.get(u.cookie, "/wallet/statement?month=2026-11&format=csv")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/csv; charset=utf-8" ||
		rec.Header().Get("Content-Disposition") != `attachment; filename="gpumarket-statement-2026-11.csv"` {
		t.Fatalf("csv: %d %v", rec.Code, rec.Header())
	}
	want := "section,time,kind,asset,account,amount,instance,minutes,reason,opening,in,out,closing\n" +
		"balance,2026-11-01T00:00:00Z,,GMT,user:" + string(u.svc.accounts["renter@example.com"].ID) + ":available,,,,,0.00,10.00,0.25,9.75\n" +
		"line,2026-11-01T01:00:00Z,deposit,GMT,,10.00,,,\"'=HYPERLINK(\"\"x\"\")\",,,,\n" +
		"line,2026-11-01T02:00:00Z,charge,GMT,,-0.25,i-1,30,,,,,\n"
	if got := rec.Body.String(); got != want {
		t.Errorf("csv:\n%s\nwant:\n%s", got, want)
	}
	rec = u.get(u.cookie, "/wallet/statement?month=2026-11&format=json")
	check(t, rec, 200, `"month": "2026-11"`, `"from_minute": 100`)
	if rec := u.get("", "/wallet/statement?month=2026-11"); rec.Code != http.StatusSeeOther {
		t.Errorf("statement without a session: %d", rec.Code)
	}
}

func TestMachineVerificationSection(t *testing.T) {
	u := newUI(t)
	rec := u.get(u.hostCk, "/machines/"+string(u.machine))
	check(t, rec, 200, `id="reliability">97.3 %<`, `id="perf">17.4<`, "online 9.9 h of 10.0 h listed", "1 instances ended by a host fault", `id="checks"`, "GPU 1 answered &lt;late&gt;", "coverage x fault_factor")
}

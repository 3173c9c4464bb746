package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// findChromium returns the path of a Chromium or Chrome binary, or "".
func findChromium() string {
	if p := os.Getenv("GPUMARKET_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts headless Chromium for t, or skips loudly (fails in CI)
// when there is none.
func browser(t *testing.T) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped under -short")
	}
	path := findChromium()
	if path == "" {
		msg := "NO CHROMIUM: the web UI browser test is skipped. Install Debian's chromium (scripts/test does as root) or set GPUMARKET_CHROMIUM."
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// TestWebUIInBrowser drives the web UI in headless Chromium against a
// real coordinator and agent on 127.0.0.1, as `gpumarket dev` runs them:
// sign up, faucet, search, rent, watch the logs arrive live, stop, see
// the charge; then the host changes its price and sees its earnings.
func TestWebUIInBrowser(t *testing.T) {
	bctx := browser(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const speedup = 120 // a billing minute every half second
	co, err := startCoordinator(ctx, coordinatorConfig{
		Listen: "127.0.0.1:0", DB: filepath.Join(t.TempDir(), "gm.db"), Mode: "dev",
		Clock: speedClock{start: time.Now(), speedup: speedup}, Speedup: speedup,
		Logger: slog.New(slog.DiscardHandler), Tick: 100 * time.Millisecond,
		Faucet: market.Tokens(100), Passwords: cheapPasswords{},
		// Earnings settle after a simulated minute and small payouts are
		// allowed, so the host can withdraw what the test earned.
		SettlementDelay: time.Minute, MinWithdrawal: market.Money(1000),
		SpotInterval: time.Minute, // a spot round every half second
	})
	if err != nil {
		t.Fatal(err)
	}
	coDone := make(chan error, 1)
	go func() { coDone <- co.Run(ctx) }()
	defer func() { cancel(); <-coDone }()

	svc := co.Service
	if _, err := svc.CreateAccount(ctx, "host@example.com", "host-password", []market.Role{market.RoleHost}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateAccount(ctx, "ops@example.com", "ops-password", []market.Role{market.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	hostLogin := must[market.LoginResult](t, "host login")(svc.Login(ctx, market.LoginRequest{Email: "host@example.com", Password: "host-password"}))
	agentCtx, stopAgent := context.WithCancel(ctx)
	ag, err := newAgent(agentCtx, agentOptions{
		StateDir: t.TempDir(), FakeGPUs: "2xRTX 4090", Client: apiclient.New(co.URL, hostLogin.Key.Secret, nil),
		Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: 100 * time.Millisecond, PollWait: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(agentCtx) }()
	defer func() { stopAgent(); <-agentDone }()
	m, err := listDemoMachine(ctx, svc, hostLogin.Account)
	if err != nil {
		t.Fatal(err)
	}

	shots := os.Getenv("GPUMARKET_SCREENSHOTS")
	if shots == "" {
		shots, err = os.MkdirTemp("", "gpumarket-ui-screenshots-")
		if err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of the web UI are in %s", shots)
	n := 0
	shot := func(name string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		n++
		if err := os.WriteFile(filepath.Join(shots, fmt.Sprintf("%02d-%s.png", n, name)), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			loc, _ := chromedp.Run(bctx, chromedp.Location())
			body, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("main")))
			shot("failed")
			t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, body)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	// waitFor polls a JavaScript condition in the page, through page
	// loads (a poll cut off by a navigation is retried).
	waitFor := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			sctx, cancel := context.WithTimeout(bctx, 2*time.Second)
			ok, err := chromedp.Run(sctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(2*time.Second)))
			cancel()
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				do(what, func(context.Context, *chromedp.Target) (chromedp.Void, error) { return chromedp.Void{}, err })
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Sign up as a renter.
	do("sign up",
		chromedp.Navigate(co.URL+"/signup"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), "renter@example.com"),
		chromedp.SendKeys(chromedp.CSS("#password"), "short"),
		chromedp.Click(chromedp.CSS("#signup")),
		chromedp.WaitVisible(chromedp.CSS(".field-error")),
	)
	if got := text(".field-error"); !strings.Contains(got, "at least 8 characters") {
		t.Errorf("short password error %q", got)
	}
	shot("signup-error")
	do("sign up again",
		chromedp.SendKeys(chromedp.CSS("#password"), "password-1"),
		chromedp.Click(chromedp.CSS("#signup")),
		chromedp.WaitVisible(chromedp.CSS("#q")),
	)

	// Faucet.
	do("faucet",
		chromedp.Navigate(co.URL+"/wallet"),
		chromedp.WaitVisible(chromedp.CSS("#faucet")),
		chromedp.Click(chromedp.CSS("#faucet")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	if got := text("#available"); got != "100.00" {
		t.Errorf("available after the faucet = %q, want 100.00", got)
	}

	// Search: a bad query, an empty result with its explanation, a match.
	do("bad query",
		chromedp.Navigate(co.URL+"/offers"),
		chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), "num_gpus>>2"),
		chromedp.Click(chromedp.CSS("#search")),
		chromedp.WaitVisible(chromedp.CSS("#q-error")),
	)
	shot("offers-query-error")
	do("empty search",
		chromedp.SetValue(chromedp.CSS("#q"), "gpu_name=RTX_4090 num_gpus>=4"),
		chromedp.Click(chromedp.CSS("#search")),
		chromedp.WaitVisible(chromedp.CSS("#explain")),
	)
	if got := text("#explain"); !strings.Contains(got, "num_gpus>=4") {
		t.Errorf("explanation does not name the filter:\n%s", got)
	}
	shot("offers-explain")
	// From the keyboard: the query field submits with Enter.
	do("search",
		chromedp.SetValue(chromedp.CSS("#q"), "gpu_name=RTX_4090 num_gpus>=1"),
		chromedp.SendKeys(chromedp.CSS("#q"), "\r"),
		chromedp.WaitVisible(chromedp.CSS("#offers")),
	)
	if got := text("#offers"); !strings.Contains(got, string(m.ID)) {
		t.Fatalf("offers lack machine %s:\n%s", m.ID, got)
	}
	shot("offers")

	// Rent: a server-side error first, then one GPU running a loop that
	// prints a line every 200 ms.
	do("rent form",
		chromedp.Click(chromedp.CSS("#offers a.button")),
		chromedp.WaitVisible(chromedp.CSS("#rent-form")),
		chromedp.SetValue(chromedp.CSS("#gpus"), "9"),
		chromedp.SendKeys(chromedp.CSS("#command"), `i=0; while true; do echo "tick $i <b>$GREETING</b>"; i=$((i+1)); sleep 0.2; done`),
		chromedp.SendKeys(chromedp.CSS("#env"), "GREETING=hello"),
		chromedp.Click(chromedp.CSS("#review-button")),
		chromedp.WaitVisible(chromedp.CSS(".field-error")),
	)
	if got := text(".field-error"); !strings.Contains(got, "has 2 GPUs") {
		t.Errorf("GPU count error %q", got)
	}
	// The container fields are offered (this machine runs plain processes,
	// so they stay empty): a template per market.Templates, ports, keys.
	if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#rent-form select#template option, #rent-form input#ports, #rent-form textarea#ssh_keys").length`)); err != nil || n != len(market.Templates())+3 {
		t.Errorf("rent form has %d template options and port and key fields (%v), want %d", n, err, len(market.Templates())+3)
	}
	shot("rent-error")
	do("review",
		chromedp.SetValue(chromedp.CSS("#gpus"), "1"),
		chromedp.Click(chromedp.CSS("#review-button")),
		chromedp.WaitVisible(chromedp.CSS("#review")),
	)
	if price, escrow := text("#review-price"), text("#review-escrow"); !strings.Contains(price, "0.50 tokens per hour") || !strings.Contains(escrow, "0.50 tokens") {
		t.Errorf("review shows price %q, escrow %q; want 0.50 each", price, escrow)
	}
	shot("rent-review")
	do("confirm", chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#logs")))

	// The state turns running and the log lines arrive without a reload.
	waitFor("instance running", `document.getElementById("state").textContent === "running"`)
	waitFor("live log lines", `document.getElementById("logs").textContent.includes("tick 5 <b>hello</b>")`)
	if bold, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#logs b").length`)); err != nil || bold != 0 {
		t.Errorf("log text became HTML: %d <b> elements (%v)", bold, err)
	}
	// The GPU charts fill while it runs: the page reloads the fragment
	// every few seconds, each with the agent's newer readings.
	waitFor("charts with readings", `(function(){
		var p = document.querySelector("#chart-util path.chart-line");
		return !!p && (p.getAttribute("d").match(/L/g) || []).length >= 3 && !!document.getElementById("latest");
	})()`)
	first, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("#chart-power path.chart-line").getAttribute("d")`))
	if err != nil {
		t.Fatal(err)
	}
	waitFor("the chart to grow", `document.querySelector("#chart-power path.chart-line").getAttribute("d").length > `+fmt.Sprint(len(first)))
	for _, id := range []string{"chart-util", "chart-mem", "chart-power", "chart-temp"} {
		if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#`+id+` path.chart-line").length`)); err != nil || n != 1 {
			t.Errorf("%s has %d lines (%v), want 1 for the instance's one GPU", id, n, err)
		}
	}
	if got := text("#latest"); !strings.Contains(got, " W") || !strings.Contains(got, "°C") {
		t.Errorf("latest readings %q", got)
	}
	shot("instance-running")
	instURL, _ := chromedp.Run(bctx, chromedp.Location())

	// Stop it; the page follows it to stopped.
	do("stop", chromedp.Click(chromedp.CSS("#stop")))
	waitFor("stop page", `location.search.includes("flash=stopped") && document.readyState === "complete"`)
	waitFor("instance stopped", `document.getElementById("state").textContent === "stopped"`)
	shot("instance-stopped")

	// The charge is in the wallet and the escrow is released.
	do("wallet", chromedp.Navigate(co.URL+"/wallet"), chromedp.WaitVisible(chromedp.CSS("#history")))
	if got := text("#history"); !strings.Contains(got, "charge") {
		t.Errorf("wallet history has no charge:\n%s", got)
	}
	avail, err := market.ParseMoney(text("#available"))
	if err != nil || avail >= market.Tokens(100) || avail <= market.Tokens(99) {
		t.Errorf("available after renting = %s (%v); want a little under 100", avail, err)
	}
	if got := text("#escrow"); got != "0.00" {
		t.Errorf("escrow after the stop = %s, want 0.00", got)
	}
	// The month's statement downloads as CSV with the charge in it.
	csvText, err := chromedp.Run(bctx, chromedp.Evaluate[string](`fetch("/wallet/statement?format=csv&month=" + document.getElementById("month").value).then(r => r.text())`,
		func(p *runtime.EvaluateParams) { p.AwaitPromise = new(true) }))
	if err != nil || !strings.HasPrefix(csvText, "section,time,kind") || !strings.Contains(csvText, "\nline,") || !strings.Contains(csvText, "charge") {
		t.Errorf("statement CSV (%v):\n%s", err, csvText)
	}
	shot("wallet")
	do("instances", chromedp.Navigate(co.URL+"/instances"), chromedp.WaitVisible(chromedp.CSS("#instances")))
	shot("instances")
	t.Logf("instance page was %s", instURL)

	// API keys: a bad name, then a key whose secret is shown once.
	do("keys page", chromedp.Navigate(co.URL+"/account"), chromedp.WaitVisible(chromedp.CSS("#keys")))
	do("bad key name", chromedp.Click(chromedp.CSS("#create-key")), chromedp.WaitVisible(chromedp.CSS("#name-error")))
	do("create key",
		chromedp.SendKeys(chromedp.CSS("#key-name"), "laptop"),
		chromedp.Click(chromedp.CSS("#create-key")),
		chromedp.WaitVisible(chromedp.CSS("#new-secret")),
	)
	secret, err := chromedp.Run(bctx, chromedp.Value(chromedp.CSS("#new-secret")))
	if err != nil || !strings.HasPrefix(secret, "gmk_") {
		t.Fatalf("new key secret %q (%v)", secret, err)
	}
	if me, err := apiclient.New(co.URL, secret, nil).Me(ctx); err != nil || me.Email != "renter@example.com" {
		t.Errorf("the new key authenticates as %q (%v)", me.Email, err)
	}
	shot("keys")
	do("bids", chromedp.Navigate(co.URL+"/bids"), chromedp.WaitVisible(chromedp.CSS("h1")))
	do("market", chromedp.Navigate(co.URL+"/market"), chromedp.WaitVisible(chromedp.CSS("#snapshot")))
	shot("market")
	do("stake page", chromedp.Navigate(co.URL+"/stake"), chromedp.WaitVisible(chromedp.CSS("#stake")))
	do("stake", chromedp.SendKeys(chromedp.CSS("#stake"), "5"), chromedp.Click(chromedp.CSS("#stake-button")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text("#staked"); got != "5.00" {
		t.Errorf("staked %q, want 5.00", got)
	}
	shot("stake")

	// At phone width every page fits: nothing wider than the screen but
	// the tables, which scroll inside their box.
	do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	for _, page := range []struct{ name, path, sel string }{
		{"phone-offers", "/offers?q=" + url.QueryEscape("gpu_name=RTX_4090"), "#offers"},
		{"phone-instance", strings.Split(strings.TrimPrefix(instURL, co.URL), "?")[0], "#charts"},
		{"phone-wallet", "/wallet", "#history"},
	} {
		do(page.name, chromedp.Navigate(co.URL+page.path), chromedp.WaitVisible(chromedp.CSS(page.sel)))
		if w, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || w > 390 {
			t.Errorf("%s is %d px wide at a 390 px screen (%v)", page.path, w, err)
		}
		shot(page.name)
	}
	do("laptop", chromedp.EmulateViewport(1280, 900))

	// Log out; the host logs in, changes the price and sees earnings.
	do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login")))
	do("host log in",
		chromedp.SendKeys(chromedp.CSS("#email"), "host@example.com"),
		chromedp.SendKeys(chromedp.CSS("#password"), "host-password"),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS(".machine")),
	)
	priceInput := "#price-" + string(m.ID)
	do("bad price",
		chromedp.SetValue(chromedp.CSS(priceInput), "cheap"),
		chromedp.Submit(chromedp.CSS(priceInput)),
		chromedp.WaitVisible(chromedp.CSS(".field-error")),
	)
	shot("machines-price-error")
	do("set price",
		chromedp.SetValue(chromedp.CSS(priceInput), "0.75"),
		chromedp.Submit(chromedp.CSS(priceInput)),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	if got, err := chromedp.Run(bctx, chromedp.Value(chromedp.CSS(priceInput))); err != nil || got != "0.75" {
		t.Errorf("price after saving = %q (%v)", got, err)
	}
	shot("machines")

	// The machine page: its GPU charts, and the spot terms with an error
	// shown next to its field first.
	do("machine page", chromedp.Navigate(co.URL+"/machines/"+string(m.ID)), chromedp.WaitVisible(chromedp.CSS("#settings-form")))
	do("bad energy price",
		chromedp.SetValue(chromedp.CSS("#energy"), "a lot"),
		chromedp.Click(chromedp.CSS("#save-settings")),
		chromedp.WaitVisible(chromedp.CSS("#energy + .field-error")),
	)
	do("spot terms",
		chromedp.SetValue(chromedp.CSS("#energy"), "0.25"),
		chromedp.SetValue(chromedp.CSS("#reserve"), "2"),
		chromedp.SetValue(chromedp.CSS("#max_power"), "350"),
		chromedp.Click(chromedp.CSS("#save-settings")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	if got, err := chromedp.Run(bctx, chromedp.Value(chromedp.CSS("#max_power"))); err != nil || got != "350" {
		t.Errorf("max power after saving = %q (%v)", got, err)
	}
	if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#chart-util path.chart-line").length`)); err != nil || n != 2 {
		t.Errorf("machine utilisation chart has %d lines (%v), want one per GPU", n, err)
	}
	if got := text("#reliability-terms"); !strings.Contains(got, "Heartbeat coverage") {
		t.Errorf("reliability terms: %q", got)
	}
	shot("machine")
	// A renter bids for the spot capacity through the API; the market
	// page then shows the rounds with the host-profit arithmetic.
	rl, err := svc.Login(ctx, market.LoginRequest{Email: "renter@example.com", Password: "password-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apiclient.New(co.URL, rl.Key.Secret, nil).CreateBid(ctx, market.CreateBidRequest{
		Machine: m.ID, GPUs: 1, PricePerGPUDay: market.Tokens(3), PowerLimitW: 300, Command: []string{"sleep", "600"},
	}); err != nil {
		t.Fatalf("bid: %v", err)
	}

	do("earnings", chromedp.Navigate(co.URL+"/earnings"), chromedp.WaitVisible(chromedp.CSS("#total")))
	if e, err := market.ParseMoney(text("#total")); err != nil || e <= 0 {
		t.Errorf("host earnings %s (%v); want above zero", e, err)
	}
	if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#earnings-chart .chart-bar").length`)); err != nil || n < 1 {
		t.Errorf("earnings chart has %d bars (%v)", n, err)
	}
	shot("earnings")

	// The host withdraws; the operator pays it out.
	do("withdrawals", chromedp.Navigate(co.URL+"/withdrawals"), chromedp.WaitVisible(chromedp.CSS("#withdraw")))
	do("withdraw too much",
		chromedp.SendKeys(chromedp.CSS("#amount"), "1000"),
		chromedp.Click(chromedp.CSS("#withdraw")),
		chromedp.WaitVisible(chromedp.CSS("#amount-error")),
	)
	do("withdraw",
		chromedp.SetValue(chromedp.CSS("#amount"), "0.01"),
		chromedp.Click(chromedp.CSS("#withdraw")),
		chromedp.WaitVisible(chromedp.CSS("#withdrawals")),
	)
	shot("withdrawals")
	do("host log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login")))
	do("operator log in",
		chromedp.SendKeys(chromedp.CSS("#email"), "ops@example.com"),
		chromedp.SendKeys(chromedp.CSS("#password"), "ops-password"),
		chromedp.Click(chromedp.CSS("#login")),
		chromedp.WaitVisible(chromedp.CSS("#who")),
		chromedp.Navigate(co.URL+"/admin"),
		chromedp.WaitVisible(chromedp.CSS("#fleet")),
	)
	if got := text("#online"); got != "1" {
		t.Errorf("admin overview: %s machines online, want 1", got)
	}
	// The renter's minutes paid fees today: the revenue chart has a bar
	// before any dividend period closed.
	if n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#revenue-chart rect.chart-bar").length`)); err != nil || n != 30 {
		t.Errorf("revenue chart has %d bars (%v), want one per day of 30", n, err)
	}
	shot("admin")
	// The market page caches its snapshot for a few seconds; rounds are
	// read fresh.
	for deadline := time.Now().Add(20 * time.Second); ; {
		do("market with rounds", chromedp.Navigate(co.URL+"/market"), chromedp.WaitVisible(chromedp.CSS("#snapshot")))
		got, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`(document.getElementById("rounds") || {}).textContent || ""`))
		if strings.Contains(got, "= host profit") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no round with a winner on the market page:\n%s", text("main"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	shot("market-rounds")
	do("ledger check", chromedp.Navigate(co.URL+"/admin/ledger"), chromedp.WaitVisible(chromedp.CSS("#ledger-ok")))
	shot("admin-ledger")
	do("queue", chromedp.Navigate(co.URL+"/admin/withdrawals"), chromedp.WaitVisible(chromedp.CSS("#queue")))
	shot("admin-withdrawals")
	do("pay out", chromedp.Click(chromedp.CSS("#queue button[type=submit]")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := text("main"); !strings.Contains(got, "No withdrawal is waiting") {
		t.Errorf("queue after the payout:\n%s", got)
	}
	do("home", chromedp.Navigate(co.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#machines")))
	shot("home")
}

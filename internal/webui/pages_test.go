package webui

import (
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

// ui is a handler on a fake service with a renter (tokens, an instance
// with logs) and a host (a listed machine).
type ui struct {
	t       *testing.T
	h       http.Handler
	svc     *fakeService
	cookie  string // the renter's session cookie value
	csrf    string
	hostCk  string
	hostTok string
	machine market.MachineID
	inst    market.InstanceID
}

func newUI(t *testing.T) *ui {
	t.Helper()
	svc := newFake()
	u := &ui{t: t, svc: svc, h: Handler(Info{Mode: "test"}, svc, slog.New(slog.DiscardHandler))}
	u.cookie, u.csrf = u.signup("renter@example.com", "renter")
	u.hostCk, u.hostTok = u.signup("host@example.com", "host")
	host := svc.accounts["host@example.com"]
	renter := svc.accounts["renter@example.com"]
	u.machine = "m-0000000000aa"
	svc.machines[u.machine] = market.Machine{ID: u.machine, Owner: host.ID, Listed: true, Online: true, Status: market.MachineListed,
		Hardware:        market.Hardware{Hostname: "box", Runner: "process", GPUs: []market.GPU{{Index: 0, Model: "RTX 4090", VRAMMiB: 24564}, {Index: 1, Model: "RTX 4090", VRAMMiB: 24564}}},
		PricePerGPUHour: market.Money(500_000), UsedGPUs: []int{}}
	svc.wallets[renter.ID] = market.Wallet{Available: market.Tokens(10)}
	u.inst = "i-0000000000aa"
	svc.instances[u.inst] = market.Instance{ID: u.inst, Renter: renter.ID, Machine: u.machine, State: market.InstanceRunning, GPUs: []int{0}, Command: []string{"sh", "-c", "echo hi"}}
	svc.logs[u.inst] = []market.LogChunk{{Seq: 1, Stream: "stdout", Data: "hello <script>alert(1)</script>\n"}, {Seq: 2, Stream: "stderr", Data: "warn\n"}}
	return u
}

// signup signs up through the page and returns the session cookie and
// the CSRF token of the new session.
func (u *ui) signup(email, role string) (cookie, csrf string) {
	u.t.Helper()
	rec := u.post("", "", "/signup", url.Values{"email": {email}, "password": {"password-1"}, "role": {role}})
	if rec.Code != http.StatusSeeOther {
		u.t.Fatalf("sign up %s: status %d\n%s", email, rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie {
			_, secret, _ := strings.Cut(c.Value, ".")
			return c.Value, csrfToken(secret)
		}
	}
	u.t.Fatalf("sign up %s set no session cookie", email)
	return "", ""
}

func (u *ui) do(req *http.Request, cookie string) *httptest.ResponseRecorder {
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
	}
	rec := httptest.NewRecorder()
	u.h.ServeHTTP(rec, req)
	return rec
}

func (u *ui) get(cookie, path string) *httptest.ResponseRecorder {
	return u.do(httptest.NewRequest("GET", path, nil), cookie)
}

// post sends a form; csrf, when set, is added as the token field.
func (u *ui) post(cookie, csrf, path string, form url.Values) *httptest.ResponseRecorder {
	if form == nil {
		form = url.Values{}
	}
	if csrf != "" {
		form.Set(csrfField, csrf)
	}
	req := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return u.do(req, cookie)
}

// check compares the status and looks for each want in the body.
func check(t *testing.T, rec *httptest.ResponseRecorder, status int, wants ...string) {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status %d, want %d; body:\n%s", rec.Code, status, rec.Body)
		return
	}
	body := rec.Body.String()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("body lacks %q; body:\n%s", w, body)
		}
	}
}

func TestSignupAndLoginErrors(t *testing.T) {
	u := newUI(t)
	for _, tc := range []struct {
		name   string
		path   string
		form   url.Values
		status int
		want   string
	}{
		{"bad email", "/signup", url.Values{"email": {"not-an-email"}, "password": {"password-1"}, "role": {"renter"}}, 400, "enter an email address"},
		{"short password", "/signup", url.Values{"email": {"a@example.com"}, "password": {"short"}, "role": {"renter"}}, 400, "at least 8 characters"},
		{"no role", "/signup", url.Values{"email": {"a@example.com"}, "password": {"password-1"}}, 400, "choose at least one"},
		{"admin role", "/signup", url.Values{"email": {"a@example.com"}, "password": {"password-1"}, "role": {"admin"}}, 400, "choose renter and/or host"},
		{"taken email", "/signup", url.Values{"email": {"renter@example.com"}, "password": {"password-1"}, "role": {"renter"}}, 409, "exists already"},
		{"escaped email", "/signup", url.Values{"email": {`"><script>x</script>`}, "password": {"password-1"}, "role": {"renter"}}, 400, "&#34;&gt;&lt;script&gt;x&lt;/script&gt;"},
		{"empty login", "/login", url.Values{}, 400, "enter your password"},
		{"wrong password", "/login", url.Values{"email": {"renter@example.com"}, "password": {"nope-nope"}}, 401, "wrong email or password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := u.post("", "", tc.path, tc.form)
			check(t, rec, tc.status, tc.want)
			if strings.Contains(rec.Body.String(), "<script>x") {
				t.Error("the email was not escaped")
			}
			if len(rec.Result().Cookies()) != 0 {
				t.Error("a failed form set a cookie")
			}
		})
	}
}

func TestSessionCookieFlags(t *testing.T) {
	u := newUI(t)
	for _, tc := range []struct {
		url    string
		secure bool
	}{{"http://example.com/login", false}, {"https://example.com/login", true}} {
		form := url.Values{"email": {"renter@example.com"}, "password": {"password-1"}, "next": {"/wallet"}}
		req := httptest.NewRequest("POST", tc.url, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := u.do(req, "")
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/wallet" {
			t.Fatalf("log in: %d to %q", rec.Code, rec.Header().Get("Location"))
		}
		cs := rec.Result().Cookies()
		if len(cs) != 1 {
			t.Fatalf("%d cookies, want 1", len(cs))
		}
		c := cs[0]
		if c.Name != sessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure != tc.secure || c.Path != "/" {
			t.Errorf("%s: cookie %+v; want HttpOnly, SameSite=Lax, Secure=%v, Path=/", tc.url, c, tc.secure)
		}
	}
}

func TestLoginRedirectStaysOnSite(t *testing.T) {
	u := newUI(t)
	for next, want := range map[string]string{
		"/instances?x=1":       "/instances?x=1",
		"//evil.example/":      "/offers",
		"https://evil.example": "/offers",
		"/\\evil.example":      "/offers",
		"":                     "/offers",
	} {
		rec := u.post("", "", "/login", url.Values{"email": {"renter@example.com"}, "password": {"password-1"}, "next": {next}})
		if got := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || got != want {
			t.Errorf("next=%q: %d to %q, want 303 to %q", next, rec.Code, got, want)
		}
	}
}

func TestPagesNeedSession(t *testing.T) {
	u := newUI(t)
	for _, path := range []string{"/offers?q=x", "/instances", "/instances/" + string(u.inst), "/wallet", "/machines", "/earnings", "/rent/" + string(u.machine)} {
		for _, cookie := range []string{"", "k-1.gmk_forged", "garbage"} {
			rec := u.get(cookie, path)
			want := "/login?next=" + url.QueryEscape(path)
			if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != want {
				t.Errorf("GET %s with cookie %q: %d to %q, want 303 to %q", path, cookie, rec.Code, rec.Header().Get("Location"), want)
			}
		}
	}
	rec := u.post("", "", "/wallet/faucet", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/login" {
		t.Errorf("POST without session: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
}

func TestCSRF(t *testing.T) {
	u := newUI(t)
	stop := "/instances/" + string(u.inst) + "/stop"
	check(t, u.post(u.cookie, "", stop, nil), http.StatusForbidden, "Form expired")
	check(t, u.post(u.cookie, "wrong", stop, nil), http.StatusForbidden, "Form expired")
	check(t, u.post(u.cookie, u.hostTok, stop, nil), http.StatusForbidden, "Form expired") // another session's token

	// A cross-site post is refused before the token is even looked at.
	form := url.Values{csrfField: {u.csrf}}
	req := httptest.NewRequest("POST", stop, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	check(t, u.do(req, u.cookie), http.StatusForbidden, "another site")
	req = httptest.NewRequest("POST", "http://example.com/login", strings.NewReader("email=renter%40example.com&password=password-1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	check(t, u.do(req, ""), http.StatusForbidden, "another site")
	if u.svc.instances[u.inst].State != market.InstanceRunning {
		t.Fatal("a refused post stopped the instance")
	}

	// Every state-changing form of a page carries the token.
	for _, path := range []string{"/instances/" + string(u.inst), "/wallet", "/offers"} {
		body := u.get(u.cookie, path).Body.String()
		if n, m := strings.Count(body, "<form method=\"post\""), strings.Count(body, `name="csrf" value="`+u.csrf+`"`); n == 0 || n != m {
			t.Errorf("%s: %d post forms, %d with the token", path, n, m)
		}
	}
	rec := u.post(u.cookie, u.csrf, stop, nil)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("stop with token: %d\n%s", rec.Code, rec.Body)
	}
}

func TestLogoutRevokesKey(t *testing.T) {
	u := newUI(t)
	check(t, u.post(u.cookie, "", "/logout", nil), http.StatusForbidden)
	rec := u.post(u.cookie, u.csrf, "/logout", nil)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", rec.Code)
	}
	c := rec.Result().Cookies()
	if len(c) != 1 || c[0].MaxAge >= 0 || !c[0].HttpOnly {
		t.Errorf("logout cookies %+v; want the session cookie deleted", c)
	}
	if rec := u.get(u.cookie, "/wallet"); rec.Code != http.StatusSeeOther {
		t.Errorf("the old cookie still works after log-out: %d", rec.Code)
	}
}

func TestOffersPage(t *testing.T) {
	u := newUI(t)
	for _, tc := range []struct {
		name, query string
		status      int
		wants       []string
	}{
		{"all", "", 200, []string{`href="/rent/` + string(u.machine) + `"`, "RTX 4090", "0.50", `id="offers"`}},
		{"bad query", "q=" + url.QueryEscape("gpu_name=RTX_4090 num_gpus>>2"), 400, []string{`id="q-error"`, `class="caret"`, `aria-invalid="true"`}},
		{"unknown field", "q=" + url.QueryEscape("gpuz=1"), 400, []string{`id="q-error"`}},
		{"bad sort", "sort=bogus", 400, []string{`id="sort-error"`, "cannot sort by"}},
		{"too long", "q=" + strings.Repeat("a", maxQueryLen+1), 400, []string{"the limit is 2000"}},
		{"empty explained", "q=" + url.QueryEscape("num_gpus>=8"), 200, []string{`id="explain"`, "No offer matches", "removed the last candidates"}},
		{"escaped", "q=" + url.QueryEscape(`gpu_name="<img src=x>"`), 200, []string{"&lt;img src=x&gt;"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := u.get(u.cookie, "/offers?"+tc.query)
			check(t, rec, tc.status, tc.wants...)
			if strings.Contains(rec.Body.String(), "<img src=x>") {
				t.Error("the query was not escaped")
			}
		})
	}
}

func TestRentPage(t *testing.T) {
	u := newUI(t)
	path := "/rent/" + string(u.machine)
	check(t, u.get(u.cookie, "/rent/m-nope"), 404, "machine m-nope not found")
	check(t, u.get(u.cookie, path+"?gpus=2"), 200, `id="price-hour">1.00<`)
	ok := url.Values{"gpus": {"2"}, "command": {"echo hi"}, "env": {"A=1\n# comment\nB=x=y"}}
	for _, tc := range []struct {
		name   string
		change url.Values
		status int
		want   string
	}{
		{"gpus not a number", url.Values{"gpus": {"two"}}, 400, "enter a whole number"},
		{"zero gpus", url.Values{"gpus": {"0"}}, 400, "at least 1 GPU"},
		{"too many gpus", url.Values{"gpus": {"9"}}, 400, "this machine has 2 GPUs"},
		{"nothing to run", url.Values{"command": {" "}}, 400, "give a command to run"},
		{"image on a process machine", url.Values{"image": {"alpine"}}, 400, "leave the image empty"},
		{"bad env", url.Values{"env": {"1X=2"}}, 400, "line 1: write NAME=value"},
		{"env twice", url.Values{"env": {"A=1\nA=2"}}, 400, "A is set twice"},
		{"review", nil, 200, `id="review-escrow"><strong>1.00</strong>`},
		{"not enough funds", url.Values{"gpus": {"2"}, "confirm": {"yes"}, "idem": {"web-funds"}}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{}
			for k, v := range ok {
				form[k] = v
			}
			for k, v := range tc.change {
				form[k] = v
			}
			if tc.name == "not enough funds" {
				w := u.svc.wallets[u.svc.accounts["renter@example.com"].ID]
				w.Available = market.Money(10)
				u.svc.wallets[u.svc.accounts["renter@example.com"].ID] = w
				check(t, u.post(u.cookie, u.csrf, path, form), http.StatusPaymentRequired, `id="rent-error"`, "holds 1.00 in escrow")
				return
			}
			check(t, u.post(u.cookie, u.csrf, path, form), tc.status, tc.want)
		})
	}
	// The host has no renter role.
	check(t, u.post(u.hostCk, u.hostTok, path, url.Values{"gpus": {"1"}, "command": {"x"}, "confirm": {"yes"}, "idem": {"web-host"}}), http.StatusForbidden, "renter role")
}

func TestRentCreates(t *testing.T) {
	u := newUI(t)
	rec := u.post(u.cookie, u.csrf, "/rent/"+string(u.machine), url.Values{"gpus": {"1"}, "command": {"echo 'hi' && sleep 1"}, "env": {"A=1"}, "confirm": {"yes"}, "idem": {"web-creates"}})
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/instances/i-") {
		t.Fatalf("rent: %d to %q\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	id := strings.TrimPrefix(strings.Split(rec.Header().Get("Location"), "?")[0], "/instances/")
	inst := u.svc.instances[market.InstanceID(id)]
	if got := strings.Join(inst.Command, "|"); got != "sh|-c|echo 'hi' && sleep 1" || inst.Env["A"] != "1" {
		t.Errorf("instance runs %q with env %v", got, inst.Env)
	}
}

// TestRentOnce: the review carries an idempotency key to the
// confirmation, so a double click or a resent form rents once, and a
// confirmation without the key rents nothing.
func TestRentOnce(t *testing.T) {
	u := newUI(t)
	path := "/rent/" + string(u.machine)
	renter := u.svc.accounts["renter@example.com"].ID
	form := url.Values{"gpus": {"1"}, "command": {"sleep 1"}}
	review := u.post(u.cookie, u.csrf, path, form)
	check(t, review, http.StatusOK, `id="review"`)
	key := idem(t, review.Body.String())
	if again := idem(t, u.post(u.cookie, u.csrf, path, form).Body.String()); again == key {
		t.Errorf("two reviews carry the same key %q", key)
	}

	before, wallet := len(u.svc.instances), u.svc.wallets[renter]
	form.Set("confirm", "yes")
	form.Set(keyField, key)
	var recs [2]*httptest.ResponseRecorder
	var wg sync.WaitGroup
	for i := range recs { // a double click: both sent before either is answered
		f := maps.Clone(form) // post sets the token in its form
		wg.Go(func() { recs[i] = u.post(u.cookie, u.csrf, path, f) })
	}
	wg.Wait()
	resent := u.post(u.cookie, u.csrf, path, form) // a resend after the answer, as from the history
	var where []string
	for _, rec := range append(recs[:], resent) {
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/instances/i-") {
			t.Fatalf("confirm: %d to %q\n%s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
		where = append(where, rec.Header().Get("Location"))
	}
	for _, w := range where[1:] {
		if w != where[0] {
			t.Errorf("the same confirmation went to %q and %q, want one instance", where[0], w)
		}
	}
	if got := len(u.svc.instances) - before; got != 1 {
		t.Errorf("%d instances made by one confirmation sent several times, want 1", got)
	}
	price := u.svc.machines[u.machine].PricePerGPUHour
	if got := u.svc.wallets[renter].Escrow - wallet.Escrow; got != price {
		t.Errorf("escrow held %s, want %s (one hour, once)", got, price)
	}

	// The key with another request is refused, not replayed.
	changed := url.Values{"gpus": {"2"}, "command": {"sleep 1"}, "confirm": {"yes"}, keyField: {key}}
	check(t, u.post(u.cookie, u.csrf, path, changed), http.StatusConflict, `id="rent-error"`, "different create instance request")

	before = len(u.svc.instances)
	for _, tc := range []struct {
		name string
		key  []string
	}{
		{"missing", nil},
		{"empty", []string{""}},
		{"spaces", []string{"web- x"}},
		{"too long", []string{"web-" + strings.Repeat("k", 61)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{"gpus": {"1"}, "command": {"sleep 2"}, "confirm": {"yes"}, keyField: tc.key}
			// The form comes back, filled in, to review again.
			check(t, u.post(u.cookie, u.csrf, path, form), http.StatusBadRequest,
				`id="rent-error"`, "did not come from the review", `id="review-button"`, `value="sleep 2"`)
		})
	}
	if got := len(u.svc.instances) - before; got != 0 {
		t.Errorf("%d instances made by confirmations without a key, want 0", got)
	}
}

func TestInstancePages(t *testing.T) {
	u := newUI(t)
	check(t, u.get(u.cookie, "/instances"), 200, string(u.inst), "running")
	rec := u.get(u.cookie, "/instances/"+string(u.inst))
	check(t, rec, 200, "hello &lt;script&gt;alert(1)&lt;/script&gt;", `data-after="2"`, `id="stop"`, "created &lt;b&gt;here&lt;/b&gt;")
	check(t, u.get(u.cookie, "/instances/i-nope"), 404, "instance i-nope not found")
	check(t, u.get(u.hostCk, "/instances/"+string(u.inst)), 404, "not found") // not the host's
	check(t, u.post(u.cookie, u.csrf, "/instances/i-nope/stop", nil), 404, "not found")
}

func TestLogStream(t *testing.T) {
	u := newUI(t)
	inst := u.svc.instances[u.inst]
	inst.State = market.InstanceStopped
	u.svc.instances[u.inst] = inst
	rec := u.get(u.cookie, "/instances/"+string(u.inst)+"/logs?after=1")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	body := rec.Body.String()
	for _, want := range []string{"event: state\ndata: {\"state\":\"stopped\",\"active\":false}\n\n", "id: 2\nevent: log\ndata: {\"data\":\"warn\\n\",\"stream\":\"stderr\"}\n\n", "event: end\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("stream lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "hello") {
		t.Error("the stream repeated a chunk before after=1")
	}
	for _, path := range []string{"/instances/i-nope/logs", "/instances/" + string(u.inst) + "/logs?after=-1"} {
		if rec := u.get(u.cookie, path); rec.Code < 400 {
			t.Errorf("GET %s = %d, want an error", path, rec.Code)
		}
	}
	// Last-Event-ID resumes after the last chunk seen.
	req := httptest.NewRequest("GET", "/instances/"+string(u.inst)+"/logs", nil)
	req.Header.Set("Last-Event-ID", "2")
	if body := u.do(req, u.cookie).Body.String(); strings.Contains(body, "event: log") {
		t.Errorf("resumed stream repeats chunks:\n%s", body)
	}
}

func TestWalletPage(t *testing.T) {
	u := newUI(t)
	check(t, u.get(u.cookie, "/wallet"), 200, `id="available">10.00<`)
	if strings.Contains(u.get(u.cookie, "/wallet").Body.String(), `id="faucet"`) {
		t.Error("faucet button shown with the faucet off")
	}
	check(t, u.post(u.cookie, u.csrf, "/wallet/faucet", nil), http.StatusForbidden, "only in `gpumarket dev`")
	u.svc.faucet = true
	u.h = Handler(Info{Faucet: true}, u.svc, nil)
	check(t, u.get(u.cookie, "/wallet"), 200, `id="faucet"`)
	if rec := u.post(u.cookie, u.csrf, "/wallet/faucet", nil); rec.Code != http.StatusSeeOther {
		t.Errorf("faucet: %d", rec.Code)
	}
	check(t, u.get(u.cookie, "/wallet?flash=faucet"), 200, `id="available">110.00<`, "Faucet tokens credited")
}

func TestMachinePages(t *testing.T) {
	u := newUI(t)
	m := string(u.machine)
	check(t, u.get(u.hostCk, "/machines"), 200, m, "listed", `value="0.50"`, "Unlist")
	check(t, u.get(u.cookie, "/machines"), 200, "No machines yet")
	for _, tc := range []struct {
		name, path string
		form       url.Values
		status     int
		want       string
	}{
		{"empty price", "/machines/" + m + "/price", url.Values{"price": {""}}, 400, "enter a price per GPU-hour"},
		{"not a price", "/machines/" + m + "/price", url.Values{"price": {"<b>1</b>"}}, 400, "&#34;&lt;b&gt;1&lt;/b&gt;&#34; is not an amount"},
		{"negative", "/machines/" + m + "/price", url.Values{"price": {"-1"}}, 400, "above zero"},
		{"too high", "/machines/" + m + "/price", url.Values{"price": {"2000000"}}, 400, "above the limit"},
		{"other's machine", "/machines/m-nope/price", url.Values{"price": {"1"}}, 404, "not found among your machines"},
		{"bad listing", "/machines/" + m + "/listing", url.Values{"listed": {"maybe"}}, 400, "choose to list or unlist"},
		{"listing other's", "/machines/m-nope/listing", url.Values{"listed": {"no"}}, 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check(t, u.post(u.hostCk, u.hostTok, tc.path, tc.form), tc.status, tc.want)
		})
	}
	if rec := u.post(u.hostCk, u.hostTok, "/machines/"+m+"/price", url.Values{"price": {"0.75"}}); rec.Code != http.StatusSeeOther {
		t.Fatalf("set price: %d\n%s", rec.Code, rec.Body)
	}
	if rec := u.post(u.hostCk, u.hostTok, "/machines/"+m+"/listing", url.Values{"listed": {"no"}}); rec.Code != http.StatusSeeOther {
		t.Fatalf("unlist: %d", rec.Code)
	}
	check(t, u.get(u.hostCk, "/machines?flash=unlisted"), 200, `value="0.75"`, "unlisted", "List for rent", "taken off the market")
	check(t, u.get(u.hostCk, "/earnings"), 200, `id="total">3.00<`)
}

func TestInternalErrorsHidden(t *testing.T) {
	u := newUI(t)
	u.svc.broken = errors.New("disk on fire at /var/lib/secret")
	for _, path := range []string{"/wallet", "/machines"} {
		// Authenticate fails too: the user is sent to log in, not shown the error.
		if rec := u.get(u.cookie, path); rec.Code != http.StatusSeeOther {
			t.Errorf("GET %s with a broken store: %d", path, rec.Code)
		}
	}
	rec := u.post("", "", "/signup", url.Values{"email": {"new@example.com"}, "password": {"password-1"}, "role": {"renter"}})
	check(t, rec, 500, "Internal error")
	if strings.Contains(rec.Body.String(), "disk on fire") {
		t.Error("an internal error leaked to the page")
	}
}

func TestSecurityHeadersAndStatic(t *testing.T) {
	u := newUI(t)
	rec := u.get("", "/login")
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, p := range []string{"/static/style.css", "/static/app.js"} {
		if rec := u.get("", p); rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("GET %s = %d", p, rec.Code)
		}
	}
	// No page refers to anything off-site.
	for _, p := range []string{"/", "/login", "/signup"} {
		body := u.get("", p).Body.String()
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			t.Errorf("%s refers to an external URL", p)
		}
	}
	check(t, u.get(u.cookie, "/nope"), 404, "There is no page at /nope")
}

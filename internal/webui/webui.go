// Package webui serves the coordinator's web pages: server-rendered HTML
// from embedded templates, with a small embedded stylesheet and script and
// nothing loaded from elsewhere.
//
// It talks to the coordinator through the Service interface it declares
// and imports market, match and coord for their types; never another
// adapter.
package webui

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

var pages = template.Must(template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/*.html"))

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"whenp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"gb":  func(mib int64) int64 { return (mib + 512) / 1024 },
	"gib": func(mib int64) float64 { return float64(mib) / 1024 },
	"dur": shortDuration,
	// purpose is the last part of a ledger account's name: available,
	// escrow, earnings, staked, ...
	"purpose": func(a market.LedgerAccount) string {
		s := string(a)
		return s[strings.LastIndexByte(s, ':')+1:]
	},
	"pct":         func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + " %" },
	"hours":       func(secs int64) string { return strconv.FormatFloat(float64(secs)/3600, 'f', 1, 64) + " h" },
	"join":        strings.Join,
	"sshKeysPath": func() string { return market.SSHKeysPath },
	"active":      func(s market.InstanceState) bool { return !s.Terminal() },
	"times":       func(m market.Money, n int) market.Money { return m * market.Money(n) },
	"seq": func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i + 1
		}
		return s
	},
}

// Info is what the home page says about the running coordinator.
type Info struct {
	Version string
	Mode    string // "serve" or "dev"
	Stats   func() Stats
	// Faucet shows the dev faucet button on the wallet page.
	Faucet bool
	// CacheTTL is how old the admin overview's and the market page's
	// network-wide figures may be; 0 means DefaultCacheTTL, below 0 no
	// caching.
	CacheTTL time.Duration
}

// Stats are live counts shown on the home page.
type Stats struct {
	Machines, OnlineMachines, RunningInstances int
}

// maxForm bounds the body of every form post.
const maxForm = 64 << 10

// server holds what the handlers share.
type server struct {
	info Info
	svc  Service
	log  *slog.Logger

	fleet    cached[[]market.Machine]    // every machine, for the admin overview
	revenue  cached[[]market.DayRevenue] // fees per day, for the admin overview
	snapshot cached[market.Snapshot]     // the spot market, for the market page
}

// Handler serves the pages. With a nil svc only the home page and the
// static files are served (for tests of the home page alone).
func Handler(info Info, svc Service, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{info: info, svc: svc, log: log}
	ttl := info.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	s.fleet.ttl, s.revenue.ttl, s.snapshot.ttl = ttl, ttl, ttl
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFiles, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(time.Hour, http.FileServerFS(static))))
	mux.HandleFunc("GET /{$}", s.home)
	if svc != nil {
		mux.HandleFunc("GET /signup", s.signupForm)
		mux.HandleFunc("POST /signup", s.signup)
		mux.HandleFunc("GET /login", s.loginForm)
		mux.HandleFunc("POST /login", s.login)
		mux.HandleFunc("POST /logout", s.authed(s.logout))

		mux.HandleFunc("GET /offers", s.authed(s.offers))
		mux.HandleFunc("GET /rent/{machine}", s.authed(s.rentForm))
		mux.HandleFunc("POST /rent/{machine}", s.authed(s.rent))
		mux.HandleFunc("GET /instances", s.authed(s.instances))
		mux.HandleFunc("GET /instances/{id}", s.authed(s.instance))
		mux.HandleFunc("POST /instances/{id}/stop", s.authed(s.stopInstance))
		mux.HandleFunc("GET /instances/{id}/logs", s.authed(s.logStream))
		mux.HandleFunc("GET /instances/{id}/charts", s.authed(s.instanceChartsFragment))
		mux.HandleFunc("GET /wallet", s.authed(s.wallet))
		mux.HandleFunc("POST /wallet/faucet", s.authed(s.faucet))
		mux.HandleFunc("GET /wallet/statement", s.authed(s.statement))

		mux.HandleFunc("GET /machines", s.authed(s.machines))
		mux.HandleFunc("GET /machines/{id}", s.authed(s.machinePage))
		mux.HandleFunc("POST /machines/{id}/settings", s.authed(s.machineSettings))
		mux.HandleFunc("GET /machines/{id}/charts", s.authed(s.machineChartsFragment))
		mux.HandleFunc("POST /machines/{id}/price", s.authed(s.setPrice))
		mux.HandleFunc("POST /machines/{id}/listing", s.authed(s.setListing))
		mux.HandleFunc("GET /earnings", s.authed(s.earnings))

		mux.HandleFunc("GET /account", s.authed(s.keys))
		mux.HandleFunc("POST /account/keys", s.authed(s.createKey))
		mux.HandleFunc("POST /account/keys/{id}/revoke", s.authed(s.revokeKey))
		mux.HandleFunc("GET /bids", s.authed(s.bids))
		mux.HandleFunc("GET /market", s.authed(s.marketPage))
		mux.HandleFunc("GET /withdrawals", s.authed(s.withdrawals))
		mux.HandleFunc("POST /withdrawals", s.authed(s.withdraw))
		mux.HandleFunc("GET /stake", s.authed(s.stake))
		mux.HandleFunc("POST /stake/add", s.authed(s.changeStake(true)))
		mux.HandleFunc("POST /stake/remove", s.authed(s.changeStake(false)))
		mux.HandleFunc("GET /admin", s.authed(s.adminOverview))
		mux.HandleFunc("GET /admin/ledger", s.authed(s.adminLedger))
		mux.HandleFunc("GET /admin/withdrawals", s.authed(s.adminWithdrawals))
		mux.HandleFunc("POST /admin/withdrawals/{id}/complete", s.authed(s.decideWithdrawal(true)))
		mux.HandleFunc("POST /admin/withdrawals/{id}/reject", s.authed(s.decideWithdrawal(false)))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.render(w, r, http.StatusNotFound, "error", &page{Title: "Not found", Message: "There is no page at " + r.URL.Path + "."})
	})

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.render(w, r, http.StatusForbidden, "error", &page{Title: "Forbidden", Message: "This form was sent from another site, so it was refused. Open the page on this site and send it again."})
	}))
	return securityHeaders(cop.Handler(mux))
}

// securityHeaders forbids inline and foreign scripts, framing and
// sniffing: the pages need only their own files.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(d/time.Second)))
		h.ServeHTTP(w, r)
	})
}

// page is what every template gets. Data holds the page's own values.
type page struct {
	Title   string
	Nav     string // the active menu entry
	Info    Info
	Account *market.Account // nil when logged out
	CSRF    string
	Flash   string // a one-line success note
	Message string // the error page's text
	Error   string // an error about the whole form
	Errors  map[string]string
	Form    url.Values
	Data    any
}

// Has reports whether the logged-in account holds role r.
func (p *page) Has(r string) bool { return p.Account != nil && p.Account.Has(market.Role(r)) }

// Val is the submitted value of a form field, for re-filling a form.
func (p *page) Val(name string) string { return p.Form.Get(name) }

// Checked reports whether a checkbox was ticked, or byDefault on a fresh
// form.
func (p *page) Checked(name, value string, byDefault bool) bool {
	if len(p.Form) == 0 {
		return byDefault
	}
	return slices.Contains(p.Form[name], value)
}

// fieldError records a message shown next to a form field.
func (p *page) fieldError(field, msg string) {
	if p.Errors == nil {
		p.Errors = map[string]string{}
	}
	p.Errors[field] = msg
}

// render executes a template into a buffer first, so that a failing
// template gives a clean 500 instead of half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	p.Info = s.info
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("render page", "page", name, "err", err)
		http.Error(w, "internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// fail shows an error from the service as a page with the status its kind
// maps to. Unknown errors are logged and shown as "internal error".
func (s *server) fail(w http.ResponseWriter, r *http.Request, p *page, err error) {
	status, title := statusOf(err)
	switch {
	case status == http.StatusUnauthorized:
		s.toLogin(w, r)
		return
	case status == http.StatusInternalServerError:
		s.log.Error("web page", "path", r.URL.Path, "err", err)
		p.Message = "Internal error: something went wrong on our side. The operator's log has the details; try again in a moment."
	default:
		p.Message = market.Message(err)
	}
	p.Title = title
	s.render(w, r, status, "error", p)
}

// statusOf maps an error kind to an HTTP status and a page title.
func statusOf(err error) (int, string) {
	switch market.KindOf(err) {
	case market.NotFound:
		return http.StatusNotFound, "Not found"
	case market.Invalid:
		return http.StatusBadRequest, "Invalid request"
	case market.Conflict:
		return http.StatusConflict, "Conflict"
	case market.Unauthorized:
		return http.StatusUnauthorized, "Log in"
	case market.Forbidden:
		return http.StatusForbidden, "Not allowed"
	case market.InsufficientFunds:
		return http.StatusPaymentRequired, "Not enough funds"
	case market.Unavailable:
		return http.StatusServiceUnavailable, "Unavailable"
	}
	return http.StatusInternalServerError, "Internal error"
}

// userError reports whether err is one a user can act on (not Internal),
// so its message may be shown next to a field.
func userError(err error) bool {
	var me *market.Error
	return errors.As(err, &me) && market.KindOf(err) != market.Internal
}

func (s *server) home(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "gpumarket", Nav: "home"}
	if s.svc != nil {
		if sess, ok := s.session(r); ok {
			p.Account, p.CSRF = &sess.account, sess.csrf
		}
	}
	var st Stats
	if s.info.Stats != nil {
		st = s.info.Stats()
	}
	p.Data = st
	s.render(w, r, http.StatusOK, "home", p)
}

// shortDuration writes an interval the way people say it: "1 min",
// "10 min", "1 h 30 min", "45 s".
func shortDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 s"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + " h"
	case d < time.Hour && d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + " min"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Hour)) + " h " + strconv.Itoa(int(d%time.Hour/time.Minute)) + " min"
	}
	return d.String()
}

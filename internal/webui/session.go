package webui

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// sessionCookie holds "KEYID.SECRET" of the API key made at log-in. The
// secret authenticates; the ID lets log-out revoke exactly that key.
const sessionCookie = "gm_session"

// csrfField is the form field that carries the session's CSRF token.
const csrfField = "csrf"

type session struct {
	account market.Account
	keyID   market.APIKeyID
	secret  string
	csrf    string
}

// csrfToken derives the per-session token from the key secret, which only
// the browser's HttpOnly cookie holds: another site can neither read the
// cookie nor compute the token.
func csrfToken(secret string) string {
	sum := sha256.Sum256([]byte("gpumarket web csrf\x00" + secret))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// session returns the logged-in account of r's cookie, if any.
func (s *server) session(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	id, secret, ok := strings.Cut(c.Value, ".")
	if !ok || id == "" || secret == "" {
		return session{}, false
	}
	a, err := s.svc.Authenticate(r.Context(), secret)
	if err != nil {
		if !market.IsKind(err, market.Unauthorized) {
			s.log.Error("authenticate web session", "err", err)
		}
		return session{}, false
	}
	return session{account: a, keyID: market.APIKeyID(id), secret: secret, csrf: csrfToken(secret)}, true
}

func setSession(w http.ResponseWriter, r *http.Request, k market.NewAPIKey) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: string(k.ID) + "." + k.Secret, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
}

func clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil,
	})
}

// authed wraps a handler that needs a logged-in user. Without a session
// it sends the user to the log-in page. A POST must carry the session's
// CSRF token (on top of the cross-origin check that wraps everything), and
// its body is bounded.
func (s *server) authed(h func(http.ResponseWriter, *http.Request, *page, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.session(r)
		if !ok {
			s.toLogin(w, r)
			return
		}
		p := &page{Account: &sess.account, CSRF: sess.csrf}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				p.Title, p.Message = "Bad form", "The form could not be read (it may be too large); go back and try again."
				s.render(w, r, http.StatusBadRequest, "error", p)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostForm.Get(csrfField)), []byte(sess.csrf)) != 1 {
				p.Title, p.Message = "Form expired", "This form is from an older session or another site, so it was refused. Reload the page and send it again."
				s.render(w, r, http.StatusForbidden, "error", p)
				return
			}
		}
		h(w, r, p, sess)
	}
}

// toLogin sends the user to log in, and back here afterwards for a page.
func (s *server) toLogin(w http.ResponseWriter, r *http.Request) {
	target := "/login"
	if r.Method == http.MethodGet {
		target += "?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// localPath returns next when it is a path on this site, else fallback,
// so that the log-in form cannot redirect elsewhere.
func localPath(next, fallback string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return fallback
	}
	u, err := url.Parse(next)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return fallback
	}
	return next
}

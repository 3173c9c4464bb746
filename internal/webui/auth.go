package webui

import (
	"net/http"
	"net/mail"
	"strings"

	"github.com/gpumarket/gpumarket/internal/market"
)

// formPost bounds and parses a form sent without a session (sign-up,
// log-in); the cross-origin check protects those.
func formPost(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	return r.ParseForm() == nil
}

func (s *server) signupForm(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Sign up", Nav: "signup", Form: r.URL.Query()}
	s.render(w, r, http.StatusOK, "signup", p)
}

func (s *server) signup(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Sign up", Nav: "signup"}
	if !formPost(w, r) {
		p.Error = "The form could not be read; try again."
		s.render(w, r, http.StatusBadRequest, "signup", p)
		return
	}
	p.Form = r.PostForm
	email := strings.TrimSpace(r.PostForm.Get("email"))
	password := r.PostForm.Get("password")
	var roles []market.Role
	for _, v := range r.PostForm["role"] {
		switch v {
		case "renter", "host":
			roles = append(roles, market.Role(v))
		default:
			p.fieldError("role", "choose renter and/or host")
		}
	}
	if addr, err := mail.ParseAddress(email); email == "" || len(email) > 254 || err != nil || addr.Address != email {
		p.fieldError("email", "enter an email address, like you@example.com")
	}
	switch {
	case len(password) < 8:
		p.fieldError("password", "the password must be at least 8 characters long")
	case len(password) > 1024:
		p.fieldError("password", "the password must be at most 1024 characters long")
	}
	if len(roles) == 0 && p.Errors["role"] == "" {
		p.fieldError("role", "choose at least one: renter (rent GPUs) or host (offer GPUs)")
	}
	if len(p.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "signup", p)
		return
	}
	if _, err := s.svc.Signup(r.Context(), market.SignupRequest{Email: email, Password: password, Roles: roles}); err != nil {
		if !userError(err) {
			s.fail(w, r, p, err)
			return
		}
		field := "email"
		if strings.Contains(market.Message(err), "password") {
			field = "password"
		}
		p.fieldError(field, market.Message(err))
		s.render(w, r, statusOfForm(err), "signup", p)
		return
	}
	res, err := s.svc.Login(r.Context(), market.LoginRequest{Email: email, Password: password, KeyName: "web session"})
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	setSession(w, r, res.Key)
	next := "/offers"
	if !res.Account.Has(market.RoleRenter) {
		next = "/machines"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// statusOfForm is the status of a form shown again with an error.
func statusOfForm(err error) int {
	st, _ := statusOf(err)
	if st == http.StatusInternalServerError || st == http.StatusUnauthorized {
		return http.StatusBadRequest
	}
	return st
}

func (s *server) loginForm(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Log in", Nav: "login", Form: r.URL.Query()}
	s.render(w, r, http.StatusOK, "login", p)
}

func (s *server) login(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Log in", Nav: "login"}
	if !formPost(w, r) {
		p.Error = "The form could not be read; try again."
		s.render(w, r, http.StatusBadRequest, "login", p)
		return
	}
	p.Form = r.PostForm
	email := strings.TrimSpace(r.PostForm.Get("email"))
	password := r.PostForm.Get("password")
	if email == "" {
		p.fieldError("email", "enter the email address you signed up with")
	}
	if password == "" {
		p.fieldError("password", "enter your password")
	}
	if len(email) > 254 || len(password) > 1024 {
		p.Error = "wrong email or password"
	}
	if len(p.Errors) > 0 || p.Error != "" {
		s.render(w, r, http.StatusBadRequest, "login", p)
		return
	}
	res, err := s.svc.Login(r.Context(), market.LoginRequest{Email: email, Password: password, KeyName: "web session"})
	if err != nil {
		if !userError(err) {
			s.fail(w, r, p, err)
			return
		}
		p.Error = market.Message(err)
		s.render(w, r, http.StatusUnauthorized, "login", p)
		return
	}
	setSession(w, r, res.Key)
	fallback := "/offers"
	if !res.Account.Has(market.RoleRenter) {
		fallback = "/machines"
	}
	http.Redirect(w, r, localPath(r.PostForm.Get("next"), fallback), http.StatusSeeOther)
}

// logout revokes the session's API key, so a copied cookie stops working
// too, and clears the cookie.
func (s *server) logout(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	keys, err := s.svc.Keys(r.Context(), sess.account)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	for _, k := range keys {
		// The ID comes from the cookie: revoke it only if it names the key
		// whose secret authenticated this request.
		if k.ID == sess.keyID && strings.HasPrefix(sess.secret, k.Prefix) {
			if err := s.svc.RevokeKey(r.Context(), sess.account, k.ID); err != nil {
				s.fail(w, r, p, err)
				return
			}
		}
	}
	clearSession(w, r)
	http.Redirect(w, r, "/login?out=1", http.StatusSeeOther)
}

package coord

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gpumarket/gpumarket/internal/market"
)

// KeyPrefix starts every API key secret, so that leaked keys are easy to
// recognise and scan for.
const KeyPrefix = "gmk_"

// Argon2id hashes passwords with argon2id (19 MiB, t=2, p=1), the OWASP
// minimum, in the PHC string format.
type Argon2id struct{}

const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// Hash returns the PHC string of password with a random salt.
func (Argon2id) Hash(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", argonMemory, argonTime, argonThreads, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// Verify reports whether password matches hash, in constant time.
func (Argon2id) Verify(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	want, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// Signup creates an account with the renter and/or host role. Admins are
// made by the operator, never by sign-up.
func (s *Service) Signup(ctx context.Context, req market.SignupRequest) (market.Account, error) {
	const op = "sign up"
	email := strings.TrimSpace(req.Email)
	if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email {
		return market.Account{}, market.Errorf(op, market.Invalid, "%q is not an email address", req.Email)
	}
	if len(req.Password) < 8 {
		return market.Account{}, market.Errorf(op, market.Invalid, "the password must be at least 8 characters long")
	}
	roles := req.Roles
	if len(roles) == 0 {
		roles = []market.Role{market.RoleRenter}
	}
	for _, r := range roles {
		if r != market.RoleRenter && r != market.RoleHost {
			return market.Account{}, market.Errorf(op, market.Invalid, "role %q cannot be chosen at sign-up; choose renter and/or host", r)
		}
	}
	return s.CreateAccount(ctx, email, req.Password, roles)
}

// CreateAccount creates an account with any roles; for the operator
// (admin bootstrap, demo accounts) and Signup.
func (s *Service) CreateAccount(ctx context.Context, email, password string, roles []market.Role) (market.Account, error) {
	hash, err := s.cfg.Passwords.Hash(password)
	if err != nil {
		return market.Account{}, fmt.Errorf("hash password: %w", err)
	}
	slices.Sort(roles)
	a := market.Account{
		ID:           market.AccountID(market.NewID(market.AccountPrefix)),
		Email:        email,
		PasswordHash: hash,
		Roles:        slices.Compact(roles),
		CreatedAt:    s.now(),
	}
	err = s.store.Tx(ctx, func(tx Tx) error {
		if err := tx.InsertAccount(ctx, a); err != nil {
			if market.IsKind(err, market.Conflict) {
				return market.Errorf("create account", market.Conflict, "an account with email %s exists already; log in instead", email)
			}
			return err
		}
		return tx.AppendEvent(ctx, market.Event{At: a.CreatedAt, Type: "account.created", Account: a.ID, Message: "account created with roles " + joinRoles(a.Roles)})
	})
	return a, err
}

func joinRoles(rs []market.Role) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r))
	}
	return strings.Join(s, ",")
}

// Login checks a password and returns a new API key for the account.
func (s *Service) Login(ctx context.Context, req market.LoginRequest) (market.LoginResult, error) {
	var a market.Account
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		a, err = tx.AccountByEmail(ctx, strings.TrimSpace(req.Email))
		return err
	})
	if err != nil && !market.IsKind(err, market.NotFound) {
		return market.LoginResult{}, err
	}
	if err != nil || !s.cfg.Passwords.Verify(a.PasswordHash, req.Password) {
		return market.LoginResult{}, market.Errorf("log in", market.Unauthorized, "wrong email or password")
	}
	name := req.KeyName
	if name == "" {
		name = "login"
	}
	k, err := s.CreateKey(ctx, a, name)
	if err != nil {
		return market.LoginResult{}, err
	}
	return market.LoginResult{Account: a, Key: k}, nil
}

// CreateKey makes a new API key for the caller. The secret is in the
// result and nowhere else.
func (s *Service) CreateKey(ctx context.Context, caller market.Account, name string) (market.NewAPIKey, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 {
		return market.NewAPIKey{}, market.Errorf("create key", market.Invalid, "a key needs a name of 1 to 100 characters")
	}
	secret := KeyPrefix + market.RandomToken(20)
	sum := sha256.Sum256([]byte(secret))
	k := market.APIKey{
		ID:        market.APIKeyID(market.NewID(market.APIKeyPrefix)),
		Owner:     caller.ID,
		Name:      name,
		Prefix:    secret[:len(KeyPrefix)+6],
		Hash:      sum[:],
		CreatedAt: s.now(),
	}
	err := s.store.Tx(ctx, func(tx Tx) error { return tx.InsertAPIKey(ctx, k) })
	return market.NewAPIKey{APIKey: k, Secret: secret}, err
}

// Keys lists the caller's API keys, revoked ones included.
func (s *Service) Keys(ctx context.Context, caller market.Account) ([]market.APIKey, error) {
	var ks []market.APIKey
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		ks, err = tx.APIKeys(ctx, caller.ID)
		return err
	})
	return ks, err
}

// RevokeKey revokes one of the caller's keys; it stops working at once.
func (s *Service) RevokeKey(ctx context.Context, caller market.Account, id market.APIKeyID) error {
	err := s.store.Tx(ctx, func(tx Tx) error { return tx.RevokeAPIKey(ctx, caller.ID, id, s.now()) })
	if err == nil {
		s.keys.forget(id)
	}
	return err
}

// Authenticate returns the account of an API key secret.
func (s *Service) Authenticate(ctx context.Context, secret string) (market.Account, error) {
	const op = "authenticate"
	if !strings.HasPrefix(secret, KeyPrefix) {
		return market.Account{}, market.Errorf(op, market.Unauthorized, "this is not a gpumarket API key; log in with `gpumarket login` or pass a key starting with %s", KeyPrefix)
	}
	sum := sha256.Sum256([]byte(secret))
	now := s.now()
	if a, ok := s.keys.get(sum, now); ok {
		return a, nil
	}
	var a market.Account
	var keyID market.APIKeyID
	err := s.store.Tx(ctx, func(tx Tx) error {
		k, err := tx.APIKeyByHash(ctx, sum[:])
		if market.IsKind(err, market.NotFound) {
			return market.Errorf(op, market.Unauthorized, "unknown API key; log in again with `gpumarket login`")
		}
		if err != nil {
			return err
		}
		if k.RevokedAt != nil {
			return market.Errorf(op, market.Unauthorized, "API key %s was revoked; log in again or use another key", k.Prefix)
		}
		keyID = k.ID
		a, err = tx.Account(ctx, k.Owner)
		return err
	})
	if err == nil {
		s.keys.put(sum, keyID, a, now)
	}
	return a, err
}

func require(caller market.Account, op string, r market.Role) error {
	if caller.Has(r) {
		return nil
	}
	return market.Errorf(op, market.Forbidden, "this needs the %s role; your account has %s", r, joinRoles(caller.Roles))
}

// keyCache remembers recently authenticated keys for keyCacheTTL, so that
// a request (an agent's heartbeat above all) costs no database read. A key
// revoked through this coordinator stops working at once; through another
// replica, within keyCacheTTL.
type keyCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]cachedKey
}

type cachedKey struct {
	id      market.APIKeyID
	account market.Account
	expires time.Time
}

const (
	keyCacheTTL  = 5 * time.Second
	keyCacheSize = 200_000
)

func (c *keyCache) get(sum [sha256.Size]byte, now time.Time) (market.Account, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[sum]
	if !ok || !now.Before(e.expires) {
		return market.Account{}, false
	}
	return e.account, true
}

func (c *keyCache) put(sum [sha256.Size]byte, id market.APIKeyID, a market.Account, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= keyCacheSize {
		c.m = map[[sha256.Size]byte]cachedKey{} // crude, bounded eviction
	}
	c.m[sum] = cachedKey{id: id, account: a, expires: now.Add(keyCacheTTL)}
}

func (c *keyCache) forget(id market.APIKeyID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sum, e := range c.m {
		if e.id == id {
			delete(c.m, sum)
		}
	}
}

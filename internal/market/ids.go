package market

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

// Typed identifiers. Each is a short random string with a prefix that says
// what it names ("m-" machine, "i-" instance), so a user who pastes the wrong
// ID gets a clear "not found" instead of silently touching another object.
type (
	AccountID  string
	APIKeyID   string
	MachineID  string
	InstanceID string
	TransferID string
)

// ID prefixes.
const (
	AccountPrefix  = "a-"
	APIKeyPrefix   = "k-"
	MachinePrefix  = "m-"
	InstancePrefix = "i-"
	TransferPrefix = "t-"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewID returns prefix followed by 12 random base32 characters (60 bits).
func NewID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return prefix + idEncoding.EncodeToString(b[:])[:12]
}

// RandomToken returns n random bytes encoded in lowercase base32, for secrets.
func RandomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(idEncoding.EncodeToString(b))
}

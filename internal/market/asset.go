package market

import (
	"fmt"
	"time"
)

// AssetKind says whose token an asset is.
type AssetKind string

// Asset kinds: the platform token (DefaultAsset) and project tokens, such
// as the rewards of a DePIN project, which an admin creates and credits.
const (
	AssetPlatform AssetKind = "platform"
	AssetProject  AssetKind = "project"
)

// AssetInfo describes an asset of the ledger. Each asset balances
// separately: every invariant holds per asset.
type AssetInfo struct {
	Name        Asset     `json:"name"`
	Kind        AssetKind `json:"kind"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// CreateAssetRequest creates a project asset (admins).
type CreateAssetRequest struct {
	Name        Asset  `json:"name"`
	Description string `json:"description,omitempty"`
}

// AssetBalances are a user's balances in one asset.
type AssetBalances struct {
	Asset     Asset `json:"asset"`
	Available Money `json:"available"`
	Escrow    Money `json:"escrow"`
	Earnings  Money `json:"earnings"`
}

// CheckAssetName checks the name of a new asset: 2 to 12 capital letters
// or digits, starting with a letter, like GMT or RNDR2.
func CheckAssetName(a Asset) error {
	if len(a) < 2 || len(a) > 12 || a[0] < 'A' || a[0] > 'Z' {
		return fmt.Errorf("asset name %q must be 2 to 12 capital letters or digits, starting with a letter, like DPN", a)
	}
	for _, c := range a {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return fmt.Errorf("asset name %q must be 2 to 12 capital letters or digits, starting with a letter, like DPN", a)
		}
	}
	return nil
}

// TransferPayment pays tokens of any asset from one user to another's
// earnings (a project paying hosts in its token).
const TransferPayment TransferKind = "payment"

// PayRequest pays a host in an asset: Amount of Asset from the payer's
// available balance to the host's earnings in that asset.
type PayRequest struct {
	Host     AccountID  `json:"host"`
	Asset    Asset      `json:"asset"`
	Amount   Money      `json:"amount"`
	Instance InstanceID `json:"instance,omitempty"` // what it pays for, if an instance
	Memo     string     `json:"memo,omitempty"`
}

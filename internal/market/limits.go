package market

import "time"

// SpendLimits are a renter's own limits, in the platform token.
// MaxPerHour caps what its running instances and open spot bids may cost
// per hour together: a create or bid that would go above it is refused.
// AlertAt raises a wallet.spend_alert event (and a POST to Webhook, when
// set) when what it spent in the last hour reaches it, at most once an
// hour. Zero turns a limit off.
type SpendLimits struct {
	MaxPerHour Money  `json:"max_per_hour"`
	AlertAt    Money  `json:"alert_at"`
	Webhook    string `json:"webhook,omitempty"`
}

// SpendStatus is a renter's limits and where it stands against them.
type SpendStatus struct {
	Account       AccountID   `json:"account"`
	Asset         Asset       `json:"asset"`
	Limits        SpendLimits `json:"limits"`
	RatePerHour   Money       `json:"rate_per_hour"`   // running instances and open bids, per hour
	SpentLastHour Money       `json:"spent_last_hour"` // charged in the last hour
	AlertedAt     *time.Time  `json:"alerted_at,omitempty"`
}

// SpendAlert is the JSON body POSTed to a renter's spend-alert webhook.
type SpendAlert struct {
	Type          string    `json:"type"` // "wallet.spend_alert"
	Account       AccountID `json:"account"`
	SpentLastHour Money     `json:"spent_last_hour"`
	AlertAt       Money     `json:"alert_at"`
	At            time.Time `json:"at"`
}

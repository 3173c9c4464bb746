package coord

import (
	"context"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// MaxRevenueDays bounds the days Revenue reports.
const MaxRevenueDays = 366

// Revenue returns the platform fees taken on each of the last days UTC
// days, today included, oldest first; days without fees are listed with
// zero. It counts the fee account's entries as the dividend statements do
// (charges less refunds), from the ledger itself, so the figures exist
// before any distribution period closes. Admin only.
func (s *Service) Revenue(ctx context.Context, caller market.Account, days int) ([]market.DayRevenue, error) {
	const op = "show revenue"
	if err := require(caller, op, market.RoleAdmin); err != nil {
		return nil, err
	}
	if days < 1 || days > MaxRevenueDays {
		return nil, market.Errorf(op, market.Invalid, "%d days of revenue: ask for 1 to %d", days, MaxRevenueDays)
	}
	now := s.now().UTC()
	from := time.Date(now.Year(), now.Month(), now.Day()-(days-1), 0, 0, 0, 0, time.UTC)
	var flows []DayFlow
	err := s.store.Tx(ctx, func(tx Tx) error {
		var err error
		flows, err = tx.FeesByDay(ctx, from, time.Time{})
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]market.DayRevenue, days)
	for i := range out {
		out[i].Day = from.AddDate(0, 0, i).Format(time.DateOnly)
	}
	for _, f := range flows {
		// Transfers made after now (a replica's clock ahead of ours) are
		// left out rather than shown as a day that has not begun.
		if i := int(f.Day.Sub(from) / (24 * time.Hour)); i >= 0 && i < days {
			out[i].Fees += f.Amount
		}
	}
	return out, nil
}

package coord

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Preemption webhooks are sent from an outbox: preempting appends an
// instance.preempted event in the same transaction, and the background
// tick posts one webhook for each such event it has not seen, after the
// transaction committed. A coordinator that restarts starts from the newest
// event, so a webhook is sent at most once and never for a preemption that
// was rolled back.

// WebhookNotice is the JSON body POSTed to a bid's webhook when its spot
// instance is preempted.
type WebhookNotice struct {
	Type          string            `json:"type"` // "instance.preempted"
	Bid           market.BidID      `json:"bid"`
	Instance      market.InstanceID `json:"instance"`
	Machine       market.MachineID  `json:"machine"`
	Reason        string            `json:"reason"`
	At            time.Time         `json:"at"`
	NoticeSeconds int               `json:"notice_seconds"` // SIGTERM now, SIGKILL after this
}

type webhookOutbox struct {
	mu      sync.Mutex
	seq     int64 // newest event looked at
	started bool
	sending sync.WaitGroup
}

// sendWebhooks posts the webhooks of preemptions committed since the last
// call. Posting happens in the background with a timeout; failures are
// logged, not retried.
func (s *Service) sendWebhooks(ctx context.Context) error {
	o := &s.webhooks
	o.mu.Lock()
	defer o.mu.Unlock()
	var notices []WebhookNotice
	var urls []string
	err := s.store.Tx(ctx, func(tx Tx) error {
		notices, urls = nil, nil
		if !o.started {
			newest, err := tx.Events(ctx, EventFilter{Limit: 1})
			if err == nil && len(newest) > 0 {
				o.seq = newest[0].Seq
			}
			return err
		}
		evs, err := tx.Events(ctx, EventFilter{Type: "instance.preempted", AfterSeq: o.seq})
		if err != nil {
			return err
		}
		slices.Reverse(evs) // oldest first
		for _, ev := range evs {
			inst, err := tx.Instance(ctx, ev.Instance)
			if err != nil || inst.Bid == "" {
				continue
			}
			b, err := tx.Bid(ctx, inst.Bid)
			if err != nil || b.Webhook == "" {
				continue
			}
			notices = append(notices, WebhookNotice{Type: ev.Type, Bid: b.ID, Instance: inst.ID, Machine: inst.Machine,
				Reason: inst.Reason, At: ev.At, NoticeSeconds: inst.GraceSeconds})
			urls = append(urls, b.Webhook)
		}
		if len(evs) > 0 {
			o.seq = max(o.seq, evs[len(evs)-1].Seq)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read preemptions for webhooks: %w", err)
	}
	o.started = true
	for i, n := range notices {
		o.sending.Go(func() { s.postWebhook(urls[i], n) })
	}
	return nil
}

func (s *Service) postWebhook(url string, n WebhookNotice) {
	s.postJSON("preemption webhook", url, n, "bid", n.Bid)
}

// postJSON posts v as JSON to a user's webhook at url, once, with a 10 s
// limit; a failure is the operator's log line (what, with attrs), since
// nobody waits for the answer.
func (s *Service) postJSON(what, url string, v any, attrs ...any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.log.Error(what, append(attrs, "err", err)...)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		s.log.Warn(what, append(attrs, "err", err)...)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gpumarket-coordinator")
	resp, err := s.cfg.WebhookClient.Do(req)
	if err != nil {
		s.log.Warn(what, append(attrs, "url", url, "err", err)...)
		return
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.log.Warn(what+" answered", append(attrs, "url", url, "status", resp.StatusCode)...)
	}
}

// WaitWebhooks waits for webhooks being posted; for tests and shutdown.
func (s *Service) WaitWebhooks() { s.webhooks.sending.Wait() }

package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// Verification checks and GPU UUID claims (migration 0005).

const (
	qInsertCheck  = `INSERT INTO checks (id, machine_id, state, created_at, body) VALUES ($1, $2, $3, $4, $5)`
	qUpdateCheck  = `UPDATE checks SET machine_id = $2, state = $3, created_at = $4, body = $5 WHERE id = $1`
	qCheckExists  = `SELECT id FROM checks WHERE id = $1`
	qCheck        = `SELECT body FROM checks WHERE id = $1`
	qChecks       = `SELECT body FROM checks` // + filter + order
	qChecksOrder  = ` ORDER BY created_at DESC, id DESC`
	qClaimsPrefix = `SELECT uuid, machine_id FROM gpu_claims WHERE uuid IN ` // + ($1, ...)
	qClaimsOf     = `SELECT uuid FROM gpu_claims WHERE machine_id = $1`
	qDeleteClaim  = `DELETE FROM gpu_claims WHERE uuid = $1 AND machine_id = $2`
	qInsertClaim  = `INSERT INTO gpu_claims (uuid, machine_id) VALUES ($1, $2)`
	qCheckMachine = `SELECT id FROM machines WHERE id = $1`
)

func scanCheck(s scanner) (market.Check, error) {
	var body string
	if err := s.Scan(&body); err != nil {
		return market.Check{}, err
	}
	// The body is the check as stored, secret included (json:"-" hides it
	// from clients, so it is stored beside the rest).
	var c storedCheck
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return market.Check{}, fmt.Errorf("decode check: %w", err)
	}
	c.Check.Secret = c.Secret
	if c.Check.GPUs == nil {
		c.Check.GPUs = []market.CheckGPU{}
	}
	return c.Check, nil
}

// storedCheck is the JSON body of a check row.
type storedCheck struct {
	market.Check
	Secret string `json:"secret"`
}

func checkBody(c market.Check) (string, error) {
	return toJSON(storedCheck{Check: c, Secret: c.Secret})
}

func (t *sqlTx) InsertCheck(ctx context.Context, c market.Check) error {
	const op = "insert check"
	if ok, err := t.exists(ctx, qCheckExists, c.ID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if ok {
		return market.Errorf(op, market.Conflict, "check %s exists", c.ID)
	}
	if ok, err := t.exists(ctx, qCheckMachine, c.Machine); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return market.Errorf(op, market.NotFound, "machine %s not found", c.Machine)
	}
	body, err := checkBody(c)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(ctx, qInsertCheck, c.ID, c.Machine, string(c.State), micros(c.CreatedAt), body); err != nil {
		return fmt.Errorf("%s %s: %w", op, c.ID, err)
	}
	return nil
}

func (t *sqlTx) UpdateCheck(ctx context.Context, c market.Check) error {
	body, err := checkBody(c)
	if err != nil {
		return err
	}
	res, err := t.tx.ExecContext(ctx, qUpdateCheck, c.ID, c.Machine, string(c.State), micros(c.CreatedAt), body)
	if err != nil {
		return fmt.Errorf("update check %s: %w", c.ID, err)
	}
	return mustAffect(res, market.Errorf("update check", market.NotFound, "check %s not found", c.ID))
}

func (t *sqlTx) Check(ctx context.Context, id market.CheckID) (market.Check, error) {
	c, err := scanCheck(t.tx.QueryRowContext(ctx, qCheck, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, market.Errorf("show check", market.NotFound, "check %s not found", id)
	}
	if err != nil {
		return c, fmt.Errorf("get check %s: %w", id, err)
	}
	return c, nil
}

func (t *sqlTx) Checks(ctx context.Context, f coord.CheckFilter) ([]market.Check, error) {
	cs, err := chunked(f.Machines, func(machines []string) ([]market.Check, error) { return t.checks(ctx, f, machines) })
	if len(f.Machines) > inList {
		slices.SortFunc(cs, func(a, b market.Check) int {
			return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(string(b.ID), string(a.ID)))
		})
		if f.Limit > 0 && len(cs) > f.Limit {
			cs = cs[:f.Limit]
		}
	}
	return cs, err
}

func (t *sqlTx) checks(ctx context.Context, f coord.CheckFilter, machines []string) ([]market.Check, error) {
	var w where
	if f.Machine != "" {
		w.add("machine_id = ?", f.Machine)
	}
	if len(machines) > 0 && f.LimitEach == 0 {
		w.in("machine_id", machines) // with LimitEach, eachOf names them
	}
	if f.State != "" {
		w.add("state = ?", string(f.State))
	}
	q := qChecks + w.sql() + qChecksOrder
	if f.LimitEach > 0 && len(machines) > 0 {
		q = w.eachOf("body", "body, created_at, id", "checks", qChecksOrder, machines, f.LimitEach)
	}
	if f.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(f.Limit)
	}
	rows, err := t.tx.QueryContext(ctx, q, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list checks: %w", err)
	}
	return collect(rows, scanCheck)
}

func (t *sqlTx) GPUClaims(ctx context.Context, uuids []string) (map[string]market.MachineID, error) {
	out := map[string]market.MachineID{}
	for chunk := range slices.Chunk(uuids, inList) {
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, u := range chunk {
			args[i], ph[i] = u, "$"+strconv.Itoa(i+1)
		}
		rows, err := t.tx.QueryContext(ctx, qClaimsPrefix+"("+strings.Join(ph, ", ")+")", args...)
		if err != nil {
			return nil, fmt.Errorf("gpu claims: %w", err)
		}
		type claim struct {
			uuid string
			m    market.MachineID
		}
		got, err := collect(rows, func(s scanner) (claim, error) {
			var c claim
			return c, s.Scan(&c.uuid, &c.m)
		})
		if err != nil {
			return nil, fmt.Errorf("gpu claims: %w", err)
		}
		for _, c := range got {
			out[c.uuid] = c.m
		}
	}
	return out, nil
}

func (t *sqlTx) ClaimGPUs(ctx context.Context, machine market.MachineID, uuids []string) error {
	const op = "claim gpus"
	held, err := t.GPUClaims(ctx, uuids)
	if err != nil {
		return err
	}
	for _, u := range uuids {
		if m, ok := held[u]; ok && m != machine {
			return market.Errorf(op, market.Conflict, "GPU %s belongs to machine %s", u, m)
		}
	}
	if ok, err := t.exists(ctx, qCheckMachine, machine); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	} else if !ok {
		return market.Errorf(op, market.NotFound, "machine %s not found", machine)
	}
	rows, err := t.tx.QueryContext(ctx, qClaimsOf, machine)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	mine, err := collect(rows, func(s scanner) (string, error) {
		var u string
		return u, s.Scan(&u)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	for _, u := range mine {
		if !slices.Contains(uuids, u) {
			if _, err := t.tx.ExecContext(ctx, qDeleteClaim, u, machine); err != nil {
				return fmt.Errorf("%s: release %s: %w", op, u, err)
			}
		}
	}
	for _, u := range uuids {
		if _, ok := held[u]; ok {
			continue
		}
		if _, err := t.tx.ExecContext(ctx, qInsertClaim, u, machine); err != nil {
			return fmt.Errorf("%s: %s: %w", op, u, err)
		}
	}
	return nil
}

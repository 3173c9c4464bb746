package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// printJSON writes v as indented JSON, the -o json form of every command.
func (e *Env) printJSON(v any) error {
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		// A tab or newline in a value (a memo, a message) would break the columns.
		cols[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func money(m market.Money, a market.Asset) string {
	if a == "" {
		a = asset
	}
	return m.String() + " " + string(a)
}

func (e *Env) time(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(e.loc).Format("2006-01-02 15:04:05")
}

func (e *Env) timePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return e.time(*t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ints(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func roles(rs []market.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return dash(strings.Join(s, ","))
}

// gpuSummary describes a machine's cards as "2x RTX 4090 (24 GiB)".
func gpuSummary(gpus []market.GPU) string {
	type model struct {
		name string
		mib  int64
	}
	var order []model
	count := map[model]int{}
	for _, g := range gpus {
		m := model{g.Model, g.VRAMMiB}
		if count[m] == 0 {
			order = append(order, m)
		}
		count[m]++
	}
	parts := make([]string, 0, len(order))
	for _, m := range order {
		parts = append(parts, fmt.Sprintf("%dx %s (%s)", count[m], m.name, mib(m.mib)))
	}
	return dash(strings.Join(parts, ", "))
}

// mib formats a size in MiB as GiB when it is at least one.
func mib(v int64) string {
	if v >= 1024 {
		g := float64(v) / 1024 // display only, not money
		if g == float64(int64(g)) {
			return fmt.Sprintf("%d GiB", int64(g))
		}
		return fmt.Sprintf("%.1f GiB", g)
	}
	return fmt.Sprintf("%d MiB", v)
}

func envString(env map[string]string) string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + env[k]
	}
	return dash(strings.Join(keys, " "))
}

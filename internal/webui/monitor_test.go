package webui

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestInstanceCharts(t *testing.T) {
	u := newUI(t)
	page := "/instances/" + string(u.inst)
	check(t, u.get(u.cookie, page), 200, `id="charts" data-src="/instances/`+string(u.inst)+`/charts?window=1h" data-active="true"`,
		`id="chart-util"`, `id="chart-mem"`, `id="chart-power"`, `id="chart-temp"`, `id="latest"`, "50 %", "300 W", "GPU utilisation (%)")
	check(t, u.get(u.cookie, page+"?window=6h"), 200, `charts?window=6h`, `aria-current="true">6h<`)
	check(t, u.get(u.cookie, page+"?window=7d"), 400, "window &#34;7d&#34; is not offered")

	frag := u.get(u.cookie, page+"/charts?window=15m")
	check(t, frag, 200, `id="chart-util"`, `class="chart-line"`)
	if strings.Contains(frag.Body.String(), "<html") {
		t.Error("the charts fragment is a whole page")
	}
	for _, tc := range []struct {
		cookie, path string
		status       int
		want         string
	}{
		{u.cookie, page + "/charts?window=2h", 400, "not offered"},
		{u.cookie, "/instances/i-nope/charts", 404, "not found"},
		{u.hostCk, page + "/charts", 404, "not found"}, // not the host's instance
	} {
		rec := u.get(tc.cookie, tc.path)
		check(t, rec, tc.status, tc.want)
	}
	if rec := u.get("", page+"/charts"); rec.Code != http.StatusSeeOther {
		t.Errorf("charts without a session: %d", rec.Code)
	}

	// An ended instance has charts but no latest readings and no reload.
	inst := u.svc.instances[u.inst]
	inst.State = market.InstanceStopped
	u.svc.instances[u.inst] = inst
	rec := u.get(u.cookie, page)
	check(t, rec, 200, `data-active="false"`, `id="chart-util"`)
	if strings.Contains(rec.Body.String(), `id="latest"`) {
		t.Error("an ended instance shows latest readings")
	}
}

func TestEarningsChart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		days  []market.DayEarnings
		bars  int
		wants []string
	}{
		{"none", nil, 0, []string{"Nothing earned yet"}},
		{"gaps filled", []market.DayEarnings{{Day: "2026-11-23", Amount: market.Tokens(3)}, {Day: "2026-11-20", Amount: market.Money(1_500_000)}}, 4,
			[]string{"Nov 20: 1.5<", "Nov 21: 0<", "Nov 22: 0<", "Nov 23: 3<"}},
		{"bad day skipped", []market.DayEarnings{{Day: "yesterday", Amount: 1}, {Day: "2026-11-23", Amount: market.Tokens(1)}}, 1, []string{"Nov 23: 1<"}},
		{"at most 90 days", []market.DayEarnings{{Day: "2026-01-01", Amount: 1}, {Day: "2026-11-23", Amount: market.Tokens(1)}}, 90, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(earningsChart(tc.days))
			if n := strings.Count(got, `class="chart-bar"`); n != tc.bars {
				t.Errorf("%d bars, want %d", n, tc.bars)
			}
			for _, w := range tc.wants {
				if !strings.Contains(got, w) {
					t.Errorf("chart lacks %q:\n%s", w, got)
				}
			}
		})
	}
	u := newUI(t)
	check(t, u.get(u.hostCk, "/earnings"), 200, `id="earnings-chart"`)
}

func TestChartsBreakOnlyAtLongGaps(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	rep := market.MetricsReport{From: t0, To: t0.Add(time.Hour), StepSeconds: 10}
	g := market.GPUSeries{}
	// A reading every 2 minutes (a sped-up dev clock), then a 20 minute
	// outage, then two more.
	for _, m := range []int{0, 2, 4, 6, 26, 28} {
		g.Points = append(g.Points, market.MetricPoint{At: t0.Add(time.Duration(m) * time.Minute), UtilPct: 50})
	}
	rep.GPUs = []market.GPUSeries{g}
	util := string(metricCharts(rep, "c-")[0])
	d := regexp.MustCompile(` d="([^"]+)"`).FindStringSubmatch(util)
	if d == nil {
		t.Fatalf("no line:\n%s", util)
	}
	if m, l := strings.Count(d[1], "M"), strings.Count(d[1], "L"); m != 2 || l != 4 {
		t.Errorf("path %q: %d moves, %d lines; want the outage to break it once (2, 4)", d[1], m, l)
	}
}

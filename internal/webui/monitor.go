package webui

import (
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/webui/chart"
)

// chartWindows are the windows the metrics pages offer.
var chartWindows = []string{"15m", "1h", "6h", "24h"}

// minChartSpan is the shortest time axis drawn, so that a fresh instance's
// first points start at the left and the chart fills as it runs.
const minChartSpan = 2 * time.Minute

// chartsData is the metrics fragment of the instance and machine pages.
type chartsData struct {
	Src     string // where the fragment reloads from
	Window  string
	Windows []string
	Active  bool // keeps reloading while true
	Latest  []market.GPUSample
	Charts  []template.HTML
	Step    int
}

// windowParam reads ?window=, defaulting to 1h; only the offered windows
// are accepted, so every link is one the page shows.
func windowParam(r *http.Request) (string, time.Duration, error) {
	w := r.URL.Query().Get("window")
	if w == "" {
		w = "1h"
	}
	if !slices.Contains(chartWindows, w) {
		return "", 0, market.Errorf("show metrics", market.Invalid, "window %q is not offered; choose one of 15m, 1h, 6h or 24h", w)
	}
	d, _ := time.ParseDuration(w)
	return w, d, nil
}

// metricCharts draws utilisation, memory, power and temperature of each
// GPU of a report.
func metricCharts(rep market.MetricsReport, idPrefix string) []template.HTML {
	from, to := rep.From, rep.To
	if to.Sub(from) < minChartSpan {
		from = to.Add(-minChartSpan)
	}
	gap := 3 * max(time.Duration(max(rep.StepSeconds, 1))*time.Second, typicalInterval(rep))
	type metric struct {
		id, title, unit string
		max             float64
		v               func(market.MetricPoint) float64
	}
	var out []template.HTML
	for _, m := range []metric{
		{"util", "GPU utilisation", "%", 100, func(p market.MetricPoint) float64 { return p.UtilPct }},
		{"mem", "GPU memory used", "GiB", 0, func(p market.MetricPoint) float64 { return p.MemUsedMiB / 1024 }},
		{"power", "Power draw", "W", 0, func(p market.MetricPoint) float64 { return p.PowerW }},
		{"temp", "Temperature", "°C", 0, func(p market.MetricPoint) float64 { return p.TempC }},
	} {
		c := chart.Line{ID: idPrefix + m.id, Title: m.title, Unit: m.unit, From: from, To: to, Max: m.max, Gap: gap,
			Empty: "No readings in this window yet; the agent sends one with each report."}
		for _, g := range rep.GPUs {
			s := chart.Series{Name: fmt.Sprintf("GPU %d", g.Index)}
			for _, p := range g.Points {
				s.Points = append(s.Points, chart.Point{At: p.At, V: m.v(p)})
			}
			c.Series = append(c.Series, s)
		}
		out = append(out, c.HTML())
	}
	return out
}

// instanceCharts builds the metrics fragment of an instance.
func (s *server) instanceCharts(r *http.Request, sess session, inst market.Instance, window string, d time.Duration) (*chartsData, error) {
	rep, err := s.svc.InstanceMetrics(r.Context(), sess.account, inst.ID, d)
	if err != nil {
		return nil, err
	}
	return &chartsData{
		Src: "/instances/" + string(inst.ID) + "/charts?window=" + window, Window: window, Windows: chartWindows,
		Active: inst.Active(), Latest: rep.Latest, Charts: metricCharts(rep, "chart-"), Step: rep.StepSeconds,
	}, nil
}

// instanceChartsFragment serves the charts alone, for the page's script
// to swap in every few seconds.
func (s *server) instanceChartsFragment(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	window, d, err := windowParam(r)
	if err != nil {
		http.Error(w, market.Message(err), http.StatusBadRequest)
		return
	}
	inst, err := s.svc.Instance(r.Context(), sess.account, market.InstanceID(r.PathValue("id")))
	if err != nil {
		st, _ := statusOf(err)
		http.Error(w, market.Message(err), st)
		return
	}
	cd, err := s.instanceCharts(r, sess, inst, window, d)
	if err != nil {
		st, _ := statusOf(err)
		if st == http.StatusInternalServerError {
			s.log.Error("instance charts", "instance", inst.ID, "err", err)
		}
		http.Error(w, market.Message(err), st)
		return
	}
	p.Data = cd
	s.render(w, r, http.StatusOK, "charts", p)
}

// earningsChart draws a host's earnings per UTC day, oldest first, with
// days without earnings between the first and the last as zero.
func earningsChart(days []market.DayEarnings) template.HTML {
	c := chart.Bar{ID: "earnings-chart", Title: "Earnings per day", Unit: "tokens", Empty: "Nothing earned yet"}
	byDay := map[string]market.Money{}
	var first, last time.Time
	for _, d := range days {
		t, err := time.Parse("2006-01-02", d.Day)
		if err != nil {
			continue
		}
		byDay[d.Day] += d.Amount
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	if !first.IsZero() {
		if last.Sub(first) > 89*24*time.Hour {
			first = last.Add(-89 * 24 * time.Hour)
		}
		for t := first; !t.After(last); t = t.AddDate(0, 0, 1) {
			c.Labels = append(c.Labels, t.Format("Jan 2"))
			// A chart value, not money arithmetic: float is fine here.
			c.Values = append(c.Values, float64(byDay[t.Format("2006-01-02")])/float64(market.Tokens(1)))
		}
	}
	return c.HTML()
}

// typicalInterval is the median time between consecutive points of the
// report's series: how often the agent reports, which under a sped-up dev
// clock is many steps. A line breaks only at gaps well above it.
func typicalInterval(rep market.MetricsReport) time.Duration {
	var ds []time.Duration
	for _, g := range rep.GPUs {
		for i := 1; i < len(g.Points); i++ {
			ds = append(ds, g.Points[i].At.Sub(g.Points[i-1].At))
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

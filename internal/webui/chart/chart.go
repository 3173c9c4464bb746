// Package chart draws small line and bar charts as inline SVG, so pages
// show charts without JavaScript or anything loaded from elsewhere, and
// look the same in a screenshot as in a browser.
//
// It imports only the standard library. Every text it writes is escaped.
// It lives under webui, which uses it, because adapters never import each
// other.
package chart

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// Point is one value of a series at a time.
type Point struct {
	At time.Time
	V  float64
}

// Series is one line of a line chart.
type Series struct {
	Name   string
	Points []Point // in time order
}

// Line is a line chart of series over a time range.
type Line struct {
	ID     string // the svg element's id; optional
	Title  string // shown above the plot and read by screen readers
	Unit   string // of the values, after the title and on the axis, like "%" or "W"
	From   time.Time
	To     time.Time
	Min    float64 // lowest value of the value axis
	Max    float64 // highest; 0 = fit the data (rounded up to a nice number)
	Series []Series
	Empty  string // shown when no series has a point; default "No data yet"
	// Gap is the longest time between two points drawn as joined; a
	// longer gap breaks the line. 0 never breaks.
	Gap time.Duration
}

// Bar is a bar chart of labelled values, such as earnings per day.
type Bar struct {
	ID     string
	Title  string
	Unit   string
	Labels []string
	Values []float64
	Empty  string
}

// Size of every chart, in SVG user units; it scales to its container.
const (
	width   = 640
	height  = 220
	padL    = 52
	padR    = 12
	padT    = 28
	padB    = 30
	plotW   = width - padL - padR
	plotH   = height - padT - padB
	maxBars = 120
)

// palette holds the series colours, distinct for colour-blind readers
// (Okabe-Ito).
var palette = []string{"#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"}

type svg struct{ b strings.Builder }

func (s *svg) f(format string, a ...any) { fmt.Fprintf(&s.b, format, a...) }

func esc(s string) string { return html.EscapeString(s) }

// num formats a coordinate with at most one decimal.
func num(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

func (s *svg) open(id, title, unit string) {
	label := title
	if unit != "" {
		label += " (" + unit + ")"
	}
	s.f(`<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s"`, width, height, esc(label))
	if id != "" {
		s.f(` id="%s"`, esc(id))
	}
	s.f(` xmlns="http://www.w3.org/2000/svg"><title>%s</title>`, esc(label))
	s.f(`<text class="chart-title" x="%d" y="16">%s</text>`, padL, esc(label))
}

func (s *svg) empty(msg string) {
	if msg == "" {
		msg = "No data yet"
	}
	s.f(`<rect class="chart-frame" x="%d" y="%d" width="%d" height="%d"/>`, padL, padT, plotW, plotH)
	s.f(`<text class="chart-empty" x="%d" y="%d" text-anchor="middle">%s</text></svg>`, padL+plotW/2, padT+plotH/2+4, esc(msg))
}

// niceMax rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// isNice reports whether v is 1, 2, 2.5 or 5 times a power of ten.
func isNice(v float64) bool {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return false
	}
	m := v / math.Pow(10, math.Floor(math.Log10(v)))
	for _, c := range []float64{1, 2, 2.5, 5, 10} {
		if math.Abs(m-c) < 1e-9 {
			return true
		}
	}
	return false
}

// tick formats a value-axis label of an axis whose labels are step apart,
// with as many decimals as the step needs: 0.0025 apart reads 0.0025,
// 0.005, 0.0075, not 0.00, 0.01, 0.01.
func tick(v, step float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case a >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	case a == math.Trunc(a):
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	decimals := 2
	if step > 0 && !math.IsInf(step, 0) {
		decimals = max(0, int(math.Ceil(-math.Log10(step)-1e-9)))
		for decimals < 12 && math.Abs(step*math.Pow(10, float64(decimals))-math.Round(step*math.Pow(10, float64(decimals)))) > 1e-6 {
			decimals++ // 2.5 x 10^k needs one more
		}
	}
	// Round to those decimals, then drop trailing zeros: 0.0050 reads 0.005.
	return strconv.FormatFloat(math.Round(v*math.Pow(10, float64(decimals)))/math.Pow(10, float64(decimals)), 'f', -1, 64)
}

// yAxis draws the grid lines and labels of [lo, hi] and returns the
// function from value to y.
func (s *svg) yAxis(lo, hi float64) func(float64) float64 {
	// Four steps, or five when that makes round labels (0, 5, ..., 25
	// rather than 0, 6.25, ..., 25).
	n := 4
	if !isNice((hi-lo)/4) && isNice((hi-lo)/5) {
		n = 5
	}
	y := func(v float64) float64 {
		if hi == lo {
			return padT + plotH
		}
		v = math.Max(lo, math.Min(hi, v))
		return padT + plotH - (v-lo)/(hi-lo)*plotH
	}
	for i := 0; i <= n; i++ {
		v := lo + (hi-lo)*float64(i)/float64(n)
		yy := num(y(v))
		s.f(`<line class="chart-grid" x1="%d" y1="%s" x2="%d" y2="%s"/>`, padL, yy, padL+plotW, yy)
		s.f(`<text class="chart-tick" x="%d" y="%s" text-anchor="end">%s</text>`, padL-6, num(y(v)+4), tick(v, (hi-lo)/float64(n)))
	}
	return y
}

// timeLabel picks a label format that fits the span of the axis.
func timeLabel(span time.Duration) string {
	switch {
	case span <= 2*time.Minute:
		return "15:04:05"
	case span <= 36*time.Hour:
		return "15:04"
	}
	return "Jan 2"
}

// HTML renders the chart.
func (c Line) HTML() template.HTML {
	var s svg
	s.open(c.ID, c.Title, c.Unit)
	hi := c.Max
	have := false
	for _, sr := range c.Series {
		for _, p := range sr.Points {
			have = true
			if c.Max == 0 && !math.IsNaN(p.V) && !math.IsInf(p.V, 0) {
				hi = math.Max(hi, p.V)
			}
		}
	}
	if !have || !c.To.After(c.From) {
		s.empty(c.Empty)
		return template.HTML(s.b.String()) //nolint:gosec // every text is escaped
	}
	if c.Max == 0 {
		hi = niceMax(hi - c.Min)
		hi += c.Min
	}
	y := s.yAxis(c.Min, hi)
	span := c.To.Sub(c.From)
	x := func(t time.Time) float64 { return padL + float64(t.Sub(c.From))/float64(span)*plotW }
	layout := timeLabel(span)
	for i := 0; i <= 4; i++ {
		t := c.From.Add(span * time.Duration(i) / 4)
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 4:
			anchor = "end"
		}
		s.f(`<text class="chart-tick" x="%s" y="%d" text-anchor="%s">%s</text>`, num(x(t)), height-10, anchor, t.UTC().Format(layout))
	}
	s.f(`<rect class="chart-frame" x="%d" y="%d" width="%d" height="%d"/>`, padL, padT, plotW, plotH)
	for i, sr := range c.Series {
		color := palette[i%len(palette)]
		var d strings.Builder
		var last time.Time
		n := 0
		for _, p := range sr.Points {
			if p.At.Before(c.From) || p.At.After(c.To) || math.IsNaN(p.V) || math.IsInf(p.V, 0) {
				continue
			}
			cmd := "L"
			if n == 0 || (c.Gap > 0 && p.At.Sub(last) > c.Gap) {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%s %s", cmd, num(x(p.At)), num(y(p.V)))
			last = p.At
			n++
		}
		if n == 0 {
			continue
		}
		s.f(`<path class="chart-line" d="%s" stroke="%s"><title>%s</title></path>`, d.String(), color, esc(sr.Name))
		if n == 1 { // a lone point has no line to show
			p := sr.Points[len(sr.Points)-1]
			s.f(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`, num(x(p.At)), num(y(p.V)), color)
		}
	}
	if len(c.Series) > 1 {
		lx := padL + 8
		for i, sr := range c.Series {
			color := palette[i%len(palette)]
			s.f(`<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text class="chart-legend" x="%d" y="%d">%s</text>`, lx, padT+6, color, lx+14, padT+15, esc(sr.Name))
			lx += 24 + 7*len(sr.Name)
		}
	}
	s.f(`</svg>`)
	return template.HTML(s.b.String()) //nolint:gosec // every text is escaped
}

// HTML renders the chart.
func (c Bar) HTML() template.HTML {
	var s svg
	s.open(c.ID, c.Title, c.Unit)
	n := min(len(c.Labels), len(c.Values), maxBars)
	labels, values := c.Labels[len(c.Labels)-n:], c.Values[len(c.Values)-n:]
	if n == 0 {
		s.empty(c.Empty)
		return template.HTML(s.b.String()) //nolint:gosec // every text is escaped
	}
	hi := 0.0
	for _, v := range values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			hi = math.Max(hi, v)
		}
	}
	y := s.yAxis(0, niceMax(hi))
	s.f(`<rect class="chart-frame" x="%d" y="%d" width="%d" height="%d"/>`, padL, padT, plotW, plotH)
	slot := float64(plotW) / float64(n)
	bw := math.Min(48, math.Max(1, slot*0.7)) // a few bars stay bars, not slabs
	every := 1 + n/8                          // label at most about 8 bars
	for i, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			v = 0
		}
		x := padL + slot*float64(i) + (slot-bw)/2
		top := y(math.Max(v, 0))
		s.f(`<rect class="chart-bar" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s: %s</title></rect>`,
			num(x), num(top), num(bw), num(padT+plotH-top), palette[0], esc(labels[i]), esc(strconv.FormatFloat(v, 'f', -1, 64)))
		if i%every == 0 {
			s.f(`<text class="chart-tick" x="%s" y="%d" text-anchor="middle">%s</text>`, num(x+bw/2), height-10, esc(labels[i]))
		}
	}
	s.f(`</svg>`)
	return template.HTML(s.b.String()) //nolint:gosec // every text is escaped
}

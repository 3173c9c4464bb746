package chart

import (
	"encoding/xml"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".svg")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\ngot:  %s\nwant: %s", name, path, got, want)
	}
	// Every chart is well-formed XML.
	d := xml.NewDecoder(strings.NewReader(got))
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Errorf("%s is not well-formed: %v", name, err)
			}
			break
		}
	}
}

func TestCharts(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	pts := func(vs ...float64) []Point {
		var p []Point
		for i, v := range vs {
			p = append(p, Point{At: t0.Add(time.Duration(i) * 10 * time.Second), V: v})
		}
		return p
	}
	cases := map[string]string{
		"line-two-series": string(Line{ID: "util", Title: "GPU utilisation", Unit: "%", From: t0, To: t0.Add(time.Minute), Max: 100,
			Series: []Series{{Name: "GPU 0", Points: pts(0, 20, 55, 90, 100, 80, 75)}, {Name: "GPU 1", Points: pts(10, 10, 12)}}}.HTML()),
		"line-fit-and-gap": string(Line{Title: "Power", Unit: "W", From: t0, To: t0.Add(time.Minute), Gap: 15 * time.Second,
			Series: []Series{{Name: "GPU 0", Points: append(pts(120, 260, 310), Point{At: t0.Add(50 * time.Second), V: math.NaN()}, Point{At: t0.Add(55 * time.Second), V: 300})}}}.HTML()),
		"line-one-point": string(Line{Title: "Temperature", Unit: "°C", From: t0, To: t0.Add(time.Hour), Series: []Series{{Name: "GPU 0", Points: pts(61)}}}.HTML()),
		"line-empty":     string(Line{Title: "Memory", Unit: "GiB", From: t0, To: t0.Add(time.Hour), Empty: "No readings: the instance <has not> started"}.HTML()),
		"line-escapes":   string(Line{ID: `x"><script>`, Title: `<b>"util"</b>`, From: t0, To: t0.Add(time.Minute), Series: []Series{{Name: "<i>", Points: pts(1, 2)}, {Name: "&", Points: pts(2, 1)}}}.HTML()),
		"bar-days": string(Bar{ID: "earnings-chart", Title: "Earnings per day", Unit: "tokens",
			Labels: []string{"Nov 20", "Nov 21", "Nov 22", "Nov 23"}, Values: []float64{1.5, 0, 12.25, 7}}.HTML()),
		"bar-empty": string(Bar{Title: "Earnings per day", Unit: "tokens", Empty: "Nothing earned yet"}.HTML()),
	}
	for name, got := range cases {
		t.Run(name, func(t *testing.T) {
			golden(t, name, got)
			if strings.Contains(got, "<script>") || strings.Contains(got, "<b>") || strings.Contains(got, "<i>") || strings.Contains(got, "<has") {
				t.Error("text was not escaped")
			}
		})
	}
}

func TestNiceMax(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, -3: 1, 0.7: 1, 1: 1, 1.1: 2, 2.2: 2.5, 3: 5, 7: 10, 42: 50, 310: 500, 451: 500, 1e6 + 1: 2e6} {
		if got := niceMax(in); got != want {
			t.Errorf("niceMax(%v) = %v, want %v", in, got, want)
		}
	}
}

func TestBarKeepsTheLastBars(t *testing.T) {
	var labels []string
	var values []float64
	for i := range maxBars + 30 {
		labels = append(labels, "d"+string(rune('a'+i%26)))
		values = append(values, float64(i))
	}
	got := string(Bar{Labels: labels, Values: values}.HTML())
	if n := strings.Count(got, `class="chart-bar"`); n != maxBars {
		t.Errorf("%d bars, want the last %d", n, maxBars)
	}
	if !strings.Contains(got, ": 149</title>") || strings.Contains(got, ": 29</title>") {
		t.Error("the bars kept are not the last ones")
	}
}

func TestIsNice(t *testing.T) {
	for v, want := range map[float64]bool{1: true, 0.25: true, 5: true, 20: true, 250: true, 6.25: false, 12.5: false, 0.625: false, 3: false, 0: false, -5: false} {
		if got := isNice(v); got != want {
			t.Errorf("isNice(%v) = %v, want %v", v, got, want)
		}
	}
}

func TestTickLabels(t *testing.T) {
	for _, c := range []struct {
		v, step float64
		want    string
	}{
		{0, 0.0025, "0"},
		{0.0025, 0.0025, "0.0025"},
		{0.005, 0.0025, "0.005"},
		{0.0075, 0.0025, "0.0075"},
		{0.3, 0.1, "0.3"},
		{0.30000000000000004, 0.1, "0.3"},
		{12.5, 2.5, "12.5"},
		{25, 5, "25"},
		{20000, 5000, "20k"},
		{2e6, 5e5, "2M"},
	} {
		if got := tick(c.v, c.step); got != c.want {
			t.Errorf("tick(%v, %v) = %q, want %q", c.v, c.step, got, c.want)
		}
	}
}

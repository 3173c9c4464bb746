package webui

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// A host's machine page: details, prices and power settings, live GPU
// metrics and the machine's recent spot rounds.

type machineData struct {
	Machine market.Machine
	Verify  market.MachineVerification
	Charts  *chartsData
	Rounds  []roundView
	MaxW    int // the highest power limit the GPUs take, for the form's hint
	MinW    int
}

// maxMachineRounds and maxMachineChecks bound the rounds and verification
// checks shown on a machine page.
const (
	maxMachineRounds = 5
	maxMachineChecks = 10
)

func (s *server) machinePage(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Machine", "machines"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	s.renderMachine(w, r, p, sess, http.StatusOK)
}

func (s *server) renderMachine(w http.ResponseWriter, r *http.Request, p *page, sess session, status int) {
	window, wd, err := windowParam(r)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	id := market.MachineID(r.PathValue("id"))
	// Machines lists only the caller's own: a renter cannot open another
	// host's machine page.
	ms, err := s.svc.Machines(r.Context(), sess.account, false)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	var m *market.Machine
	for i := range ms {
		if ms[i].ID == id {
			m = &ms[i]
		}
	}
	if m == nil {
		s.fail(w, r, p, market.Errorf("show machine", market.NotFound, "machine %s not found among your machines", id))
		return
	}
	p.Title = "Machine " + string(m.ID)
	rep, err := s.svc.MachineMetrics(r.Context(), sess.account, m.ID, wd)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	ver, err := s.svc.MachineVerification(r.Context(), sess.account, m.ID)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	if len(ver.Checks) > maxMachineChecks {
		ver.Checks = ver.Checks[:maxMachineChecks]
	}
	rs, err := s.svc.Rounds(r.Context(), coord.RoundFilter{Machine: m.ID, Limit: maxMachineRounds})
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d := &machineData{Machine: *m, Verify: ver, Charts: &chartsData{
		Src: "/machines/" + string(m.ID) + "/charts?window=" + window, Active: m.Online, Window: window, Windows: chartWindows,
		Latest: rep.Latest, Charts: metricCharts(rep, "chart-"), Step: rep.StepSeconds,
	}}
	for _, rd := range rs {
		d.Rounds = append(d.Rounds, roundViews(rd, sess.account.ID)...)
	}
	for i, g := range m.GPUs {
		if i == 0 || g.MaxPowerW < d.MaxW {
			d.MaxW = g.MaxPowerW
		}
		d.MinW = max(d.MinW, g.MinPowerW)
	}
	p.Data = d
	s.render(w, r, status, "machine", p)
}

// Limits of the settings form.
const (
	maxRegionLen = 64
)

// machineSettings saves the host's prices, location and power limit.
// Every field is checked here first so each error sits next to its field;
// the coordinator checks again.
func (s *server) machineSettings(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Machine", "machines"
	p.Form = r.PostForm
	status := http.StatusBadRequest
	var u market.MachineUpdate
	money := func(field, what string, allowZero bool) *market.Money {
		raw := strings.TrimSpace(r.PostForm.Get(field))
		if raw == "" {
			if !allowZero {
				p.fieldError(field, "enter "+what+", like 0.50")
			}
			return nil
		}
		m, err := market.ParseMoney(raw)
		switch {
		case len(raw) > 32 || err != nil:
			p.fieldError(field, fmt.Sprintf("%q is not an amount; write tokens with up to 6 decimals, like 0.50", raw))
			return nil
		case m < 0 || (m == 0 && !allowZero):
			p.fieldError(field, what+" must be above zero")
			return nil
		}
		return &m
	}
	u.PricePerGPUHour = money("price", "a price per GPU-hour", false)
	u.SpotReservePerGPUDay = money("reserve", "a spot reserve per GPU-day", true)
	u.EnergyPerKWh = money("energy", "an energy price per kWh", true)
	if raw := strings.TrimSpace(r.PostForm.Get("max_power")); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			p.fieldError("max_power", fmt.Sprintf("%q is not a whole number of watts, like 300", raw))
		} else {
			u.MaxPowerW = &n
		}
	}
	for _, f := range []struct {
		name string
		dst  **string
	}{{"region", &u.Region}, {"datacenter", &u.DataCenter}} {
		v := strings.TrimSpace(r.PostForm.Get(f.name))
		switch {
		case len(v) > maxRegionLen:
			p.fieldError(f.name, fmt.Sprintf("at most %d characters", maxRegionLen))
		case strings.ContainsAny(v, " \t\r\n<>\"'"):
			p.fieldError(f.name, "one word of letters, digits, - or _, like eu-west")
		default:
			*f.dst = &v
		}
	}
	if len(p.Errors) == 0 {
		id := market.MachineID(r.PathValue("id"))
		_, err := s.svc.UpdateMachine(r.Context(), sess.account, id, u)
		if err == nil {
			http.Redirect(w, r, "/machines/"+string(id)+"?flash=settings", http.StatusSeeOther)
			return
		}
		if !userError(err) || market.IsKind(err, market.NotFound) {
			s.fail(w, r, p, err)
			return
		}
		p.fieldError(settingsField(market.Message(err)), market.Message(err))
		status = statusOfForm(err)
	}
	s.renderMachine(w, r, p, sess, status)
}

// settingsField guesses the form field a coordinator error is about, so it
// shows next to that field; the message itself names the setting.
func settingsField(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "power"):
		return "max_power"
	case strings.Contains(m, "reserve"):
		return "reserve"
	case strings.Contains(m, "energy") || strings.Contains(m, "kwh"):
		return "energy"
	case strings.Contains(m, "datacenter") || strings.Contains(m, "data center"):
		return "datacenter"
	case strings.Contains(m, "region"):
		return "region"
	}
	return "price"
}

// machineChartsFragment serves a machine's charts alone, for the page's
// script to swap in every few seconds.
func (s *server) machineChartsFragment(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	window, d, err := windowParam(r)
	if err != nil {
		http.Error(w, market.Message(err), http.StatusBadRequest)
		return
	}
	id := market.MachineID(r.PathValue("id"))
	rep, err := s.svc.MachineMetrics(r.Context(), sess.account, id, d)
	if err != nil {
		st, _ := statusOf(err)
		if st == http.StatusInternalServerError {
			s.log.Error("machine charts", "machine", id, "err", err)
		}
		http.Error(w, market.Message(err), st)
		return
	}
	p.Data = &chartsData{Src: "/machines/" + string(id) + "/charts?window=" + window, Active: true, Window: window, Windows: chartWindows,
		Latest: rep.Latest, Charts: metricCharts(rep, "chart-"), Step: rep.StepSeconds}
	s.render(w, r, http.StatusOK, "charts", p)
}

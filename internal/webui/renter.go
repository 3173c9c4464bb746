package webui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/match"
)

// Limits of the offer search form.
const (
	maxQueryLen = 2000
	maxSortLen  = 64
)

type offersData struct {
	Query, Sort string
	Searched    bool
	Offers      []market.Offer
	Explain     *match.Explanation
	Caret       int // column of a query error, 0 for none
	Columns     []sortColumn
}

// sortColumn is a sortable column heading: its link flips the order.
type sortColumn struct {
	Label, Key, Href string
	Active, Desc     bool
}

func (s *server) offers(w http.ResponseWriter, r *http.Request, p *page, _ session) {
	p.Title, p.Nav = "Offers", "offers"
	q := r.URL.Query()
	d := &offersData{Query: q.Get("q"), Sort: q.Get("sort")}
	p.Data, p.Form = d, q
	status := http.StatusOK
	switch {
	case len(d.Query) > maxQueryLen:
		p.fieldError("q", fmt.Sprintf("the query is %d characters long; the limit is %d", len(d.Query), maxQueryLen))
	case len(d.Sort) > maxSortLen:
		p.fieldError("sort", "unknown sort order")
	}
	d.Columns = sortColumns(d.Query, d.Sort)
	if len(p.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "offers", p)
		return
	}
	f := market.OfferFilter{Query: d.Query, Sort: d.Sort}
	offers, err := s.svc.Offers(r.Context(), f)
	if err != nil {
		if !userError(err) {
			s.fail(w, r, p, err)
			return
		}
		var pe *match.ParseError
		if errors.As(err, &pe) {
			p.fieldError("q", market.Message(err))
			d.Caret = pe.Pos
		} else if strings.Contains(market.Message(err), "sort") {
			p.fieldError("sort", market.Message(err))
		} else {
			p.fieldError("q", market.Message(err))
		}
		s.render(w, r, http.StatusBadRequest, "offers", p)
		return
	}
	d.Searched, d.Offers = true, offers
	if len(offers) == 0 {
		x, err := s.svc.ExplainOffers(r.Context(), f)
		if err != nil {
			s.fail(w, r, p, err)
			return
		}
		d.Explain = &x
	}
	s.render(w, r, status, "offers", p)
}

func sortColumns(query, current string) []sortColumn {
	cols := []sortColumn{
		{Label: "GPUs free", Key: "num_gpus"},
		{Label: "VRAM", Key: "gpu_ram"},
		{Label: "Price / GPU-hour", Key: "price_per_gpu_hour"},
		{Label: "CPU cores", Key: "cpu_cores"},
		{Label: "RAM", Key: "ram"},
		{Label: "Disk", Key: "disk"},
	}
	name, desc := strings.CutPrefix(current, "-")
	for i := range cols {
		c := &cols[i]
		next := c.Key
		if c.Key == name {
			c.Active, c.Desc = true, desc
			if !desc {
				next = "-" + c.Key
			}
		}
		c.Href = "/offers?" + url.Values{"q": {query}, "sort": {next}}.Encode()
	}
	return cols
}

// rentData is the rent form and its review.
type rentData struct {
	Machine   market.Machine
	Free      int
	GPUs      int
	Command   string
	Image     string
	Env       string
	Template  string // a template's name, "" for none
	PortsText string // as typed: "8080/tcp, 22/tcp"
	Ports     []string
	SSHText   string // as typed: public keys, one per line
	SSHKeys   int    // how many keys SSHText holds
	Templates []market.Template
	PerHour   market.Money
	Escrow    market.Money
	Available market.Money
	Review    bool
	Key       string // the review's idempotency key, carried to the confirmation
}

// Limits of the rent form.
const (
	maxCommandLen = 8 << 10
	maxImageLen   = 512
	maxEnvLen     = 16 << 10
	maxPortsLen   = 1 << 10
	maxSSHLen     = 32 << 10
)

// notDocker is the message for a container field on a machine that runs
// plain processes.
func notDocker(what string) string {
	return "this machine runs plain processes; " + what + " need a machine with the docker runner (search the offers with runner=docker)"
}

func (s *server) rentForm(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Rent", "offers"
	m, err := s.svc.Machine(r.Context(), sess.account, market.MachineID(r.PathValue("machine")))
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d := &rentData{Machine: m, Free: len(m.FreeGPUs()), GPUs: 1, Templates: market.Templates()}
	if n, err := strconv.Atoi(r.URL.Query().Get("gpus")); err == nil && n >= 1 && n <= d.Free {
		d.GPUs = n
	}
	d.PerHour = m.PricePerGPUHour * market.Money(d.GPUs)
	p.Data = d
	s.render(w, r, http.StatusOK, "rent", p)
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseEnv reads KEY=VALUE lines; blank lines and lines starting with #
// are skipped.
func parseEnv(text string) (map[string]string, error) {
	env := map[string]string{}
	for i, line := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !envName.MatchString(k) {
			return nil, fmt.Errorf("line %d: write NAME=value, with a name of letters, digits and _ not starting with a digit", i+1)
		}
		if _, dup := env[k]; dup {
			return nil, fmt.Errorf("line %d: %s is set twice", i+1, k)
		}
		env[k] = v
	}
	return env, nil
}

// rent validates the form; the first post shows the review with the price
// and the escrow, the confirmed one creates the instance.
//
// The review carries a fresh idempotency key to the confirmation, and the
// instance is created under it, so a double click, a resent form or a
// confirmation sent again from the history rents once: the repeat is
// answered with the first instance. A confirmation without a well-formed
// key is refused rather than given a new key here: a key made at confirm
// time would differ on every resend and guard nothing, and such a post
// comes from a stale page or a hand-made request, not from the review.
func (s *server) rent(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Rent", "offers"
	p.Form = r.PostForm
	m, err := s.svc.Machine(r.Context(), sess.account, market.MachineID(r.PathValue("machine")))
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	f := r.PostForm
	d := &rentData{Machine: m, Free: len(m.FreeGPUs()), Command: f.Get("command"), Image: strings.TrimSpace(f.Get("image")), Env: f.Get("env"),
		Template: strings.TrimSpace(f.Get("template")), PortsText: f.Get("ports"), SSHText: f.Get("ssh_keys"), Templates: market.Templates()}
	p.Data = d
	n, err := strconv.Atoi(strings.TrimSpace(f.Get("gpus")))
	switch {
	case err != nil:
		p.fieldError("gpus", "enter a whole number of GPUs")
	case n < 1:
		p.fieldError("gpus", "rent at least 1 GPU")
	case n > len(m.GPUs):
		p.fieldError("gpus", fmt.Sprintf("this machine has %d GPUs", len(m.GPUs)))
	case n > d.Free:
		p.fieldError("gpus", fmt.Sprintf("only %d GPUs of this machine are free", d.Free))
	}
	d.GPUs = max(n, 1)
	d.PerHour = m.PricePerGPUHour * market.Money(d.GPUs)
	d.Escrow = d.PerHour // one hour is held up front
	cmd := strings.TrimSpace(d.Command)
	switch {
	case len(cmd) > maxCommandLen:
		p.fieldError("command", fmt.Sprintf("the command is longer than %d bytes", maxCommandLen))
	case strings.ContainsRune(cmd, 0):
		p.fieldError("command", "the command must not contain NUL bytes")
	case cmd == "" && d.Image == "" && d.Template == "":
		p.fieldError("command", "give a command to run, or an image")
	}
	switch {
	case len(d.Image) > maxImageLen:
		p.fieldError("image", fmt.Sprintf("the image name is longer than %d characters", maxImageLen))
	case d.Image != "" && strings.ContainsAny(d.Image, " \t\r\n\x00"):
		p.fieldError("image", "an image name has no spaces, like registry.example.com/team/app:1.2")
	case d.Image != "" && m.Runner == "process":
		p.fieldError("image", "this machine runs plain processes, not container images; leave the image empty")
	case d.Image == "" && d.Template == "" && m.Runner == "docker":
		p.fieldError("image", "this machine runs containers; name an image or choose a template")
	}
	keys := checkContainer(p, d, m)
	var env map[string]string
	if len(d.Env) > maxEnvLen {
		p.fieldError("env", fmt.Sprintf("the environment is longer than %d bytes", maxEnvLen))
	} else if env, err = parseEnv(d.Env); err != nil {
		p.fieldError("env", err.Error())
	}
	if len(p.Errors) > 0 {
		s.render(w, r, http.StatusBadRequest, "rent", p)
		return
	}
	if f.Get("confirm") != "yes" {
		wal, err := s.svc.Wallet(r.Context(), sess.account)
		if err != nil {
			s.fail(w, r, p, err)
			return
		}
		d.Available, d.Review, d.Key = wal.Available, true, newFormKey()
		s.render(w, r, http.StatusOK, "rent", p)
		return
	}
	key := f.Get(keyField)
	if !validFormKey(key) {
		p.Error = "this confirmation did not come from the review, so it could rent twice; press Review and confirm again"
		s.render(w, r, http.StatusBadRequest, "rent", p)
		return
	}
	req := market.CreateInstanceRequest{Machine: m.ID, GPUs: d.GPUs, Image: d.Image, Env: env, Template: d.Template, SSHKeys: keys}
	if len(d.Ports) > 0 {
		req.Ports = d.Ports
	}
	if cmd != "" {
		req.Command = []string{"sh", "-c", cmd}
	}
	inst, err := s.svc.CreateInstanceOnce(r.Context(), sess.account, key, req)
	if err != nil {
		if !userError(err) {
			s.fail(w, r, p, err)
			return
		}
		p.Error = market.Message(err)
		s.render(w, r, statusOfForm(err), "rent", p)
		return
	}
	http.Redirect(w, r, "/instances/"+url.PathEscape(string(inst.ID))+"?flash=created", http.StatusSeeOther)
}

// checkContainer checks the container fields of the rent form (template,
// ports, SSH keys) against machine m, with the rules of the CLI's
// --template, --port and --ssh-key (market), and returns the keys. The
// coordinator checks them again; here each error goes next to its field.
func checkContainer(p *page, d *rentData, m market.Machine) []string {
	docker := m.Runner == "docker"
	var tmpl market.Template
	if d.Template != "" {
		t, err := market.LookupTemplate(d.Template)
		switch {
		case err != nil:
			p.fieldError("template", err.Error())
		case !docker:
			p.fieldError("template", notDocker("templates"))
		default:
			tmpl = t
		}
	}
	var err error
	if len(d.PortsText) > maxPortsLen {
		p.fieldError("ports", fmt.Sprintf("the ports are longer than %d characters", maxPortsLen))
	} else if d.Ports, err = market.ParsePorts(d.PortsText); err != nil {
		p.fieldError("ports", err.Error())
	} else if len(d.Ports) > 0 {
		switch size := m.PortRange.Size(); {
		case !docker:
			p.fieldError("ports", notDocker("published ports"))
		case size == 0:
			p.fieldError("ports", "this machine publishes no ports (its host set no port range); leave the ports empty or pick another machine")
		case len(d.Ports) > size:
			p.fieldError("ports", fmt.Sprintf("this machine publishes at most %d ports (host ports %s)", size, m.PortRange))
		}
	}
	var keys []string
	if len(d.SSHText) > maxSSHLen {
		p.fieldError("ssh_keys", fmt.Sprintf("the SSH keys are longer than %d bytes", maxSSHLen))
	} else if keys, err = market.ParseSSHKeys(d.SSHText); err != nil {
		p.fieldError("ssh_keys", err.Error())
	} else if d.SSHKeys = len(keys); d.SSHKeys > 0 && !docker {
		p.fieldError("ssh_keys", notDocker("SSH keys"))
	} else if tmpl.SSH && d.SSHKeys == 0 {
		p.fieldError("ssh_keys", "the "+tmpl.Name+" template logs in with SSH; paste your public key (the line in ~/.ssh/id_ed25519.pub)")
	}
	return keys
}

func (s *server) instances(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Instances", "instances"
	is, err := s.svc.Instances(r.Context(), sess.account, false)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	// Newest first: the one just rented is on top.
	for i, j := 0, len(is)-1; i < j; i, j = i+1, j-1 {
		is[i], is[j] = is[j], is[i]
	}
	p.Data = is
	s.render(w, r, http.StatusOK, "instances", p)
}

type instanceData struct {
	Instance market.Instance
	Events   []market.Event
	Logs     string
	After    int64
	Charts   *chartsData
}

var flashes = map[string]string{
	"created":   "Instance created. It starts as soon as the host's agent picks it up.",
	"stopped":   "Stop requested. Billing has ended; the agent stops the workload on its next poll.",
	"faucet":    "Faucet tokens credited.",
	"price":     "Price saved.",
	"listed":    "Machine listed for rent.",
	"unlisted":  "Machine taken off the market. Running instances keep running.",
	"revoked":   "Key revoked: it stops working at once.",
	"withdrawn": "Payout requested: the amount is held until an operator pays it out.",
	"staked":    "Staked. It earns a share of the fees from now on.",
	"unstaked":  "Unstaked. The tokens return to your balance after the cooldown.",
	"settings":  "Settings saved.",
	"completed": "Withdrawal paid out.",
	"rejected":  "Withdrawal rejected; the money is back in the host's earnings.",
}

func (s *server) instance(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Instance", "instances"
	p.Flash = flashes[r.URL.Query().Get("flash")]
	id := market.InstanceID(r.PathValue("id"))
	inst, err := s.svc.Instance(r.Context(), sess.account, id)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	p.Title = "Instance " + string(inst.ID)
	window, wd, err := windowParam(r)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	events, err := s.svc.Events(r.Context(), sess.account, coord.EventFilter{Instance: id, Limit: 100})
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	chunks, err := s.svc.Logs(r.Context(), sess.account, id, 0, 1000, 0)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	cd, err := s.instanceCharts(r, sess, inst, window, wd)
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	d := &instanceData{Instance: inst, Events: events, Charts: cd}
	var b strings.Builder
	for _, c := range chunks {
		b.WriteString(c.Data)
		d.After = c.Seq
	}
	d.Logs = b.String()
	p.Data = d
	s.render(w, r, http.StatusOK, "instance", p)
}

func (s *server) stopInstance(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	p.Title, p.Nav = "Instance", "instances"
	inst, err := s.svc.StopInstance(r.Context(), sess.account, market.InstanceID(r.PathValue("id")))
	if err != nil {
		s.fail(w, r, p, err)
		return
	}
	http.Redirect(w, r, "/instances/"+url.PathEscape(string(inst.ID))+"?flash=stopped", http.StatusSeeOther)
}

// logPoll is how long one long poll of the logs waits; the instance's
// state is checked between polls.
const logPoll = 2 * time.Second

// logStream sends an instance's new log chunks and state changes as
// server-sent events, following Service.Logs long polls, until the
// instance has ended and its logs are drained or the browser leaves.
func (s *server) logStream(w http.ResponseWriter, r *http.Request, p *page, sess session) {
	ctx := r.Context()
	id := market.InstanceID(r.PathValue("id"))
	after := int64(0)
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "after must be a log sequence number >= 0", http.StatusBadRequest)
			return
		}
		after = max(after, n)
	}
	inst, err := s.svc.Instance(ctx, sess.account, id)
	if err != nil {
		st, _ := statusOf(err)
		http.Error(w, market.Message(err), st)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, id int64, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if id > 0 {
			fmt.Fprintf(w, "id: %d\n", id)
		}
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		return nil
	}
	type state struct {
		State  market.InstanceState `json:"state"`
		Reason string               `json:"reason,omitempty"`
		Active bool                 `json:"active"`
	}
	last := state{State: inst.State, Reason: inst.Reason, Active: inst.Active()}
	_ = send("state", 0, last)
	_ = rc.Flush()
	for ctx.Err() == nil {
		chunks, err := s.svc.Logs(ctx, sess.account, id, after, 500, logPoll)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("log stream", "instance", id, "err", err)
				_ = send("failure", 0, map[string]string{"message": "the log stream broke off; reload the page"})
				_ = rc.Flush()
			}
			return
		}
		for _, c := range chunks {
			after = c.Seq
			_ = send("log", c.Seq, map[string]string{"stream": c.Stream, "data": c.Data})
		}
		inst, err := s.svc.Instance(ctx, sess.account, id)
		if err != nil {
			return
		}
		now := state{State: inst.State, Reason: inst.Reason, Active: inst.Active()}
		if now != last {
			last = now
			_ = send("state", 0, now)
		}
		if !now.Active && len(chunks) == 0 {
			_ = send("end", 0, now)
			_ = rc.Flush()
			return
		}
		if len(chunks) == 0 {
			fmt.Fprint(w, ": ping\n\n") // finds closed connections
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

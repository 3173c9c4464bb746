package webui

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Tests of the container fields of the rent dialog (template, ports, SSH
// keys), of the instance page's ports and ssh command, and of the
// operator's revenue chart.

// testKey is a well-formed ed25519 public key line.
func testKey(comment string) string {
	const typ = "ssh-ed25519"
	blob := binary.BigEndian.AppendUint32(nil, uint32(len(typ)))
	blob = append(blob, typ...)
	blob = binary.BigEndian.AppendUint32(blob, 32)
	blob = append(blob, make([]byte, 32)...)
	return typ + " " + base64.StdEncoding.EncodeToString(blob) + " " + comment
}

// dockerMachines adds two listed docker machines of the host: one that
// publishes two host ports and one that publishes none.
func (u *ui) dockerMachines() (withPorts, noPorts market.MachineID) {
	host := u.svc.accounts["host@example.com"]
	for _, m := range []struct {
		id market.MachineID
		pr market.PortRange
	}{{"m-0000000000dk", market.PortRange{First: 40000, Last: 40001}}, {"m-0000000000np", market.PortRange{}}} {
		u.svc.machines[m.id] = market.Machine{ID: m.id, Owner: host.ID, Listed: true, Online: true, Status: market.MachineListed,
			Hardware:        market.Hardware{Hostname: "box", Runner: "docker", PortRange: m.pr, GPUs: []market.GPU{{Index: 0, Model: "RTX 4090", VRAMMiB: 24564}}},
			PricePerGPUHour: market.Money(500_000), UsedGPUs: []int{}}
	}
	return "m-0000000000dk", "m-0000000000np"
}

// nextTo fails unless the page shows msg in the error of field: after the
// field's control and before the next label.
func nextTo(t *testing.T, body, field, msg string) {
	t.Helper()
	i := strings.Index(body, `id="`+field+`"`)
	if i < 0 {
		t.Errorf("no field %s on the page:\n%s", field, body)
		return
	}
	rest := body[i:]
	if j := strings.Index(rest, "<label"); j >= 0 {
		rest = rest[:j]
	}
	if !strings.Contains(rest, `class="field-error"`) || !strings.Contains(rest, msg) {
		t.Errorf("field %s lacks the error %q next to it; after it:\n%s", field, msg, rest)
	}
}

func TestRentContainerFieldErrors(t *testing.T) {
	u := newUI(t)
	docker, noPorts := u.dockerMachines()
	key := testKey("me@laptop")
	ok := url.Values{"gpus": {"1"}, "template": {"ssh"}, "ports": {"8080/tcp, 22/tcp"}, "ssh_keys": {key}}
	for _, tc := range []struct {
		name    string
		machine market.MachineID
		change  url.Values
		field   string
		want    string
	}{
		{"unknown template", docker, url.Values{"template": {"nope"}}, "template", `unknown template &#34;nope&#34;; use one of pytorch, jupyter, ssh`},
		{"template on a process machine", "", url.Values{"template": {"jupyter"}, "ports": nil, "ssh_keys": nil, "command": {"x"}}, "template", "templates need a machine with the docker runner"},
		{"no image nor template", docker, url.Values{"template": {""}}, "image", "name an image or choose a template"},
		{"bad port", docker, url.Values{"ports": {"8080/tcp, 80/sctp"}}, "ports", `port &#34;80/sctp&#34;: protocol must be tcp or udp`},
		{"port out of range", docker, url.Values{"ports": {"70000"}}, "ports", "PORT from 1 to 65535"},
		{"port twice", docker, url.Values{"ports": {"8080 8080/tcp"}}, "ports", "port 8080/tcp is listed twice"},
		{"more ports than the host publishes", docker, url.Values{"ports": {"1, 2, 3"}}, "ports", "publishes at most 2 ports (host ports 40000-40001)"},
		{"ports where none are published", noPorts, nil, "ports", "this machine publishes no ports"},
		{"ports on a process machine", "", url.Values{"template": nil, "ssh_keys": nil, "command": {"x"}}, "ports", "published ports need a machine with the docker runner"},
		{"ports too long", docker, url.Values{"ports": {strings.Repeat("8", 1025)}}, "ports", "longer than 1024 characters"},
		{"bad key", docker, url.Values{"ssh_keys": {key + "\n\nssh-ed25519 AAAA!!!!"}}, "ssh_keys", "line 3: SSH key of type ssh-ed25519: the key data is not valid base64"},
		{"private key", docker, url.Values{"ssh_keys": {"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----"}}, "ssh_keys", "this is a private key; give the public key"},
		{"too many keys", docker, url.Values{"ssh_keys": {strings.Repeat(key+"\n", market.MaxSSHKeys+1)}}, "ssh_keys", "more than 16 SSH keys"},
		{"keys too long", docker, url.Values{"ssh_keys": {strings.Repeat("a", 32<<10+1)}}, "ssh_keys", "longer than 32768 bytes"},
		{"keys on a process machine", "", url.Values{"template": nil, "ports": nil, "command": {"x"}}, "ssh_keys", "SSH keys need a machine with the docker runner"},
		{"ssh template without a key", docker, url.Values{"ssh_keys": {"# none yet\n"}}, "ssh_keys", "the ssh template logs in with SSH; paste your public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.machine
			if m == "" {
				m = u.machine // runs plain processes
			}
			form := url.Values{}
			for k, v := range ok {
				form[k] = v
			}
			for k, v := range tc.change {
				if v == nil {
					delete(form, k)
				} else {
					form[k] = v
				}
			}
			form.Set("confirm", "yes") // refused before anything is rented
			rec := u.post(u.cookie, u.csrf, "/rent/"+string(m), form)
			check(t, rec, http.StatusBadRequest, `aria-invalid="true"`)
			nextTo(t, rec.Body.String(), tc.field, tc.want)
		})
	}
	if len(u.svc.instances) != 1 {
		t.Errorf("%d instances after refused forms, want the 1 there was", len(u.svc.instances))
	}
}

func TestRentContainerFields(t *testing.T) {
	u := newUI(t)
	docker, _ := u.dockerMachines()
	path := "/rent/" + string(docker)
	check(t, u.get(u.cookie, path), 200, `<select id="template" name="template"`, `<option value="pytorch">pytorch: PyTorch`,
		`id="ports" name="ports"`, `id="ssh_keys" name="ssh_keys"`, "at most 2)")
	check(t, u.get(u.cookie, "/rent/"+string(u.machine)), 200, `id="template"`, `id="ports"`, `id="ssh_keys"`, "templates need the docker runner")

	key1, key2 := testKey("me@laptop"), testKey("me@desk")
	keys := "# mine\r\n" + key1 + "\r\n\r\n" + key2 + "\r\n"
	form := url.Values{"gpus": {"1"}, "template": {"ssh"}, "ports": {" 8080 , 22/tcp"}, "ssh_keys": {keys}}
	rec := u.post(u.cookie, u.csrf, path, form)
	check(t, rec, 200, `id="review"`, "template <code>ssh</code>", `id="review-ports"><code>8080/tcp</code>, <code>22/tcp</code>`,
		`id="review-ssh">2 public keys<`, `name="template" value="ssh"`, `name="ports" value=" 8080 , 22/tcp"`, `name="ssh_keys" value="# mine`, "me@desk")

	// The review's hidden fields carry the form to the confirmation.
	form.Set("confirm", "yes")
	form.Set("idem", idem(t, rec.Body.String()))
	rec = u.post(u.cookie, u.csrf, path, form)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("rent: %d\n%s", rec.Code, rec.Body)
	}
	id := strings.TrimPrefix(strings.Split(rec.Header().Get("Location"), "?")[0], "/instances/")
	inst := u.svc.instances[market.InstanceID(id)]
	got := market.CreateInstanceRequest{Machine: inst.Machine, Template: inst.Template, Ports: inst.Ports, SSHKeys: inst.SSHKeys, Image: inst.Image, Command: inst.Command}
	want := market.CreateInstanceRequest{Machine: docker, Template: "ssh", Ports: []string{"8080/tcp", "22/tcp"}, SSHKeys: []string{key1, key2}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("create request mismatch (-want +got):\n%s", d)
	}

	// Without a template: an image and a command of one's own, no ports.
	rec = u.post(u.cookie, u.csrf, path, url.Values{"gpus": {"1"}, "image": {"alpine:3"}, "command": {"sleep 1"}, "confirm": {"yes"}, "idem": {"web-plain"}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("rent without a template: %d\n%s", rec.Code, rec.Body)
	}
	id = strings.TrimPrefix(strings.Split(rec.Header().Get("Location"), "?")[0], "/instances/")
	if inst := u.svc.instances[market.InstanceID(id)]; inst.Template != "" || inst.Ports != nil || inst.SSHKeys != nil || inst.Image != "alpine:3" {
		t.Errorf("plain container rented as %+v", inst)
	}
}

func TestInstancePortsAndSSH(t *testing.T) {
	u := newUI(t)
	path := "/instances/" + string(u.inst)
	if body := u.get(u.cookie, path).Body.String(); strings.Contains(body, `id="ports"`) || strings.Contains(body, `id="ssh-command"`) {
		t.Error("an instance without ports shows ports or an ssh command")
	}
	inst := u.svc.instances[u.inst]
	inst.Template, inst.Ports, inst.SSHKeys = "ssh", []string{"8080/tcp", "22/tcp", "53/udp"}, []string{testKey("me")}
	inst.PortMap = []market.PortBinding{{Port: "22/tcp", Host: "gpu1.example.net", HostPort: 40012}, {Port: "8080/tcp", Host: "gpu1.example.net", HostPort: 40011}}
	u.svc.instances[u.inst] = inst
	check(t, u.get(u.cookie, path), 200, "template <code>ssh</code>",
		`<code>8080/tcp -&gt; gpu1.example.net:40011</code>`, `<code>22/tcp -&gt; gpu1.example.net:40012</code>`, `<code>53/udp (not published yet)</code>`,
		`<code id="ssh-command">ssh -p 40012 root@gpu1.example.net</code>`, "1, read-only at <code>/etc/gpumarket/authorized_keys</code>")

	// Once it ends, its host ports are no longer its own.
	inst.State = market.InstanceStopped
	u.svc.instances[u.inst] = inst
	rec := u.get(u.cookie, path)
	check(t, rec, 200, `<code>8080/tcp</code>`, `<code>22/tcp</code>`)
	if body := rec.Body.String(); strings.Contains(body, "40012") || strings.Contains(body, `id="ssh-command"`) {
		t.Error("a stopped instance still shows its host ports or ssh command")
	}
}

func TestAdminRevenueChart(t *testing.T) {
	u := newUI(t)
	ck, _ := u.admin()
	u.svc.more().revenue = []market.DayRevenue{{Day: "2026-11-21"}, {Day: "2026-11-22"}}
	check(t, u.get(ck, "/admin"), 200, `id="revenue-chart"`, "Platform fees per UTC day", "No platform fees in the last 2 days")

	u.svc.more().revenue = []market.DayRevenue{{Day: "2026-11-21"}, {Day: "2026-11-22", Fees: market.Money(1_500_000)}, {Day: "2026-11-23", Fees: -market.Money(250_000)}}
	rec := u.get(ck, "/admin")
	check(t, rec, 200, "Nov 21: 0<", "Nov 22: 1.5<", "Nov 23: -0.25<")
	if body := rec.Body.String(); strings.Contains(body, "No platform fees") {
		t.Error("a chart with fees says there are none")
	}

	u.svc.more().revenueErr = errors.New("revenue query failed at /var/lib/secret")
	rec = u.get(ck, "/admin")
	check(t, rec, 500, "Internal error")
	if strings.Contains(rec.Body.String(), "/var/lib/secret") {
		t.Error("an internal error leaked to the page")
	}
}

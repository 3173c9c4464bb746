package market

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// pubKey builds an OpenSSH public key line of type typ.
func pubKey(typ string, body int) string {
	var blob []byte
	blob = binary.BigEndian.AppendUint32(blob, uint32(len(typ)))
	blob = append(blob, typ...)
	blob = binary.BigEndian.AppendUint32(blob, uint32(body))
	blob = append(blob, make([]byte, body)...)
	return typ + " " + base64.StdEncoding.EncodeToString(blob) + " me@laptop"
}

func TestParsePort(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{"8888/tcp", "8888/tcp", ""},
		{"8888", "8888/tcp", ""},
		{" 53/UDP ", "53/udp", ""},
		{"22/tcp", "22/tcp", ""},
		{"0/tcp", "", "PORT from 1 to 65535"},
		{"65536/tcp", "", "PORT from 1 to 65535"},
		{"http", "", "PORT from 1 to 65535"},
		{"80/sctp", "", "protocol must be tcp or udp"},
		{"80-90/tcp", "", "PORT from 1 to 65535"},
	} {
		got, err := ParsePort(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParsePort(%q) = %q, %v; want %q, error containing %q", tt.in, got, err, tt.want, tt.err)
		}
	}
	if _, err := CheckPorts([]string{"8888", "8888/tcp"}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("CheckPorts with a duplicate: %v", err)
	}
	many := make([]string, MaxPorts+1)
	for i := range many {
		many[i] = string(rune('1'+i%9)) + "000"
	}
	if _, err := CheckPorts(many); err == nil || !strings.Contains(err.Error(), "the limit is 16") {
		t.Errorf("CheckPorts with too many: %v", err)
	}
}

func TestParsePortRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want PortRange
		err  string
	}{
		{"40000-40999", PortRange{40000, 40999}, ""},
		{" 50000 - 50000 ", PortRange{50000, 50000}, ""},
		{"", PortRange{}, ""},
		{"80-90", PortRange{}, "1024 <= FIRST"},
		{"40999-40000", PortRange{}, "1024 <= FIRST <= LAST"},
		{"40000-70000", PortRange{}, "<= 65535"},
		{"40000", PortRange{}, "write it as FIRST-LAST"},
		{"a-b", PortRange{}, "write it as FIRST-LAST"},
	} {
		got, err := ParsePortRange(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v, error containing %q", tt.in, got, err, tt.want, tt.err)
		}
	}
	if n := (PortRange{40000, 40999}).Size(); n != 1000 {
		t.Errorf("Size = %d, want 1000", n)
	}
}

func TestParseSSHKey(t *testing.T) {
	ed := pubKey("ssh-ed25519", 32)
	rsa := pubKey("ssh-rsa", 279)
	mixed := "ssh-rsa " + strings.Fields(ed)[1] // the blob says ed25519
	for _, tt := range []struct{ name, in, want, err string }{
		{"ed25519", ed + "\n", ed, ""},
		{"rsa, spaces", "  " + strings.ReplaceAll(rsa, " ", "   ") + "  ", rsa, ""},
		{"no comment", strings.TrimSuffix(ed, " me@laptop"), strings.TrimSuffix(ed, " me@laptop"), ""},
		{"private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...\n", "", "private key"},
		{"two lines", ed + "\n" + rsa, "", "one line"},
		{"type only", "ssh-ed25519", "", `want "TYPE BASE64`},
		{"unknown type", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "", "not supported"},
		{"bad base64", "ssh-ed25519 AAAA!!!!", "", "not valid base64"},
		{"type mismatch", mixed, "", "does not match its type"},
		{"truncated", "ssh-ed25519 AAAAC3Nz", "", "truncated"},
	} {
		got, err := ParseSSHKey(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: ParseSSHKey = %q, %v; want %q, error containing %q", tt.name, got, err, tt.want, tt.err)
		}
	}
	if _, err := CheckSSHKeys([]string{ed, "nonsense"}); err == nil || !strings.HasPrefix(err.Error(), "SSH key 2:") {
		t.Errorf("CheckSSHKeys names the bad key: %v", err)
	}
}

func TestLimits(t *testing.T) {
	hw := Hardware{GPUs: make([]GPU, 8), CPUCores: 64, RAMMiB: 512 << 10, DiskGiB: 4000}
	share := ShareLimits(hw, 2)
	if diff := cmp.Diff(Limits{CPUMillis: 16000, MemoryMiB: 128 << 10, Pids: DefaultPids, ShmMiB: 32 << 10, DiskGiB: 1000}, share); diff != "" {
		t.Errorf("ShareLimits(2 of 8) (-want +got):\n%s", diff)
	}
	if got := ShareLimits(Hardware{CPUCores: 4}, 1); got.CPUMillis != 4000 || got.MemoryMiB != 0 {
		t.Errorf("ShareLimits without GPUs or RAM = %+v, want all 4 cores and no memory limit", got)
	}
	for _, tt := range []struct {
		name string
		in   Limits
		want Limits
		err  string
	}{
		{"defaults", Limits{}, share, ""},
		{"own memory, shm follows", Limits{MemoryMiB: 8192}, Limits{CPUMillis: 16000, MemoryMiB: 8192, Pids: DefaultPids, ShmMiB: 2048, DiskGiB: 1000}, ""},
		{"own shm", Limits{ShmMiB: 100}, Limits{CPUMillis: 16000, MemoryMiB: 128 << 10, Pids: DefaultPids, ShmMiB: 100, DiskGiB: 1000}, ""},
		{"all of the machine", Limits{CPUMillis: 64000, MemoryMiB: 512 << 10, DiskGiB: 4000}, Limits{CPUMillis: 64000, MemoryMiB: 512 << 10, Pids: DefaultPids, ShmMiB: 128 << 10, DiskGiB: 4000}, ""},
		{"too many cpus", Limits{CPUMillis: 65000}, Limits{}, "CPU limit 65 cores is above the machine's 64 cores"},
		{"too few cpus", Limits{CPUMillis: 5}, Limits{}, "too small"},
		{"too much memory", Limits{MemoryMiB: 600 << 10}, Limits{}, "memory limit 614400 MiB is above the machine's 524288 MiB"},
		{"tiny memory", Limits{MemoryMiB: 4}, Limits{}, "at least 6 MiB"},
		{"shm above memory", Limits{MemoryMiB: 1024, ShmMiB: 2048}, Limits{}, "shared memory 2048 MiB is above the memory limit"},
		{"disk", Limits{DiskGiB: 5000}, Limits{}, "disk limit 5000 GiB is above the machine's 4000 GiB"},
		{"pids", Limits{Pids: MaxPids + 1}, Limits{}, "pids limit"},
		{"negative", Limits{Pids: -1}, Limits{}, "must not be negative"},
	} {
		got, err := tt.in.Resolve(share, hw)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: Resolve = %+v, %v; want an error containing %q", tt.name, got, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Resolve: %v", tt.name, err)
		} else if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: Resolve (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestApplyTemplate(t *testing.T) {
	key := pubKey("ssh-ed25519", 32)
	got, err := ApplyTemplate(CreateInstanceRequest{Template: "jupyter", GPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got.Image != "quay.io/jupyter/pytorch-notebook:cuda12-latest" || !cmp.Equal(got.Ports, []string{"8888/tcp"}) || len(got.Command) == 0 {
		t.Errorf("jupyter = %+v", got)
	}
	got, err = ApplyTemplate(CreateInstanceRequest{Template: "ssh", SSHKeys: []string{key}, Image: "mine:1", Ports: []string{"2222/tcp"}, Command: []string{"my-sshd"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Image != "mine:1" || !cmp.Equal(got.Ports, []string{"2222/tcp"}) || !cmp.Equal(got.Command, []string{"my-sshd"}) {
		t.Errorf("the renter's own image, ports and command must win: %+v", got)
	}
	if _, err := ApplyTemplate(CreateInstanceRequest{Template: "pytorch"}); err == nil || !strings.Contains(err.Error(), "--ssh-key") {
		t.Errorf("pytorch without keys: %v, want an error asking for --ssh-key", err)
	}
	if _, err := ApplyTemplate(CreateInstanceRequest{Template: "tensorflow"}); err == nil || !strings.Contains(err.Error(), "use one of pytorch, jupyter, ssh") {
		t.Errorf("unknown template: %v", err)
	}
	for _, tp := range Templates() {
		if _, err := CheckPorts(tp.Ports); err != nil || tp.Image == "" || len(tp.Command) == 0 {
			t.Errorf("template %s is incomplete: %+v, %v", tp.Name, tp, err)
		}
		if tp.SSH && !strings.Contains(strings.Join(tp.Command, " "), "AuthorizedKeysFile="+SSHKeysPath) {
			t.Errorf("SSH template %s does not point sshd at %s", tp.Name, SSHKeysPath)
		}
	}
	ts := Templates()
	ts[0].Ports[0] = "1/tcp"
	if Templates()[0].Ports[0] == "1/tcp" {
		t.Error("Templates returns the table itself; callers can change it")
	}
}

func TestSSHCommand(t *testing.T) {
	if got := SSHCommand([]PortBinding{{Port: "8888/tcp", HostPort: 40001}, {Port: "22/tcp", Host: "gpu1.example.net", HostPort: 40012}}); got != "ssh -p 40012 root@gpu1.example.net" {
		t.Errorf("SSHCommand = %q", got)
	}
	if got := SSHCommand([]PortBinding{{Port: "8888/tcp", HostPort: 40001}}); got != "" {
		t.Errorf("SSHCommand without 22/tcp = %q, want none", got)
	}
	if got := (PortBinding{Port: "8888/tcp", Host: "h", HostPort: 40012}).String(); got != "8888/tcp -> h:40012" {
		t.Errorf("PortBinding.String = %q", got)
	}
}

func TestParsePorts(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", []string{}, ""},
		{" \n ", []string{}, ""},
		{"8080/tcp, 22/tcp", []string{"8080/tcp", "22/tcp"}, ""},
		{"8080 53/UDP,,22", []string{"8080/tcp", "53/udp", "22/tcp"}, ""},
		{"8080/tcp, 8080", nil, "listed twice"},
		{"8080/tcp; 22/tcp", nil, `port "8080/tcp;": protocol must be tcp or udp`},
		{"80/sctp", nil, "protocol must be tcp or udp"},
		{strings.Repeat("1/tcp ", MaxPorts+1), nil, "the limit is 16"},
	} {
		got, err := ParsePorts(tt.in)
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParsePorts(%q) error %v, want one containing %q", tt.in, err, tt.err)
			continue
		}
		if d := cmp.Diff(tt.want, got); err == nil && d != "" {
			t.Errorf("ParsePorts(%q) mismatch (-want +got):\n%s", tt.in, d)
		}
	}
}

func TestParseSSHKeys(t *testing.T) {
	ed, rsa := pubKey("ssh-ed25519", 32), pubKey("ssh-rsa", 279)
	for _, tt := range []struct {
		name, in string
		want     []string
		err      string
	}{
		{"none", "\n  \n", nil, ""},
		{"two, comments, CRLF", "# laptop\r\n" + ed + "\r\n\r\n  " + rsa + "  \r\n", []string{ed, rsa}, ""},
		{"bad line named", ed + "\n\nssh-ed25519 AAAA!!!!", nil, "line 3: SSH key of type ssh-ed25519: the key data is not valid base64"},
		{"private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----", nil, "line 1: this is a private key"},
		{"wrapped key", "ssh-ed25519\n" + strings.Fields(ed)[1], nil, "line 1:"},
		{"too many", strings.Repeat(ed+"\n", MaxSSHKeys+1), nil, "more than 16 SSH keys"},
	} {
		got, err := ParseSSHKeys(tt.in)
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: ParseSSHKeys error %v, want one containing %q", tt.name, err, tt.err)
			continue
		}
		if d := cmp.Diff(tt.want, got); err == nil && d != "" {
			t.Errorf("%s: ParseSSHKeys mismatch (-want +got):\n%s", tt.name, d)
		}
	}
}

func TestInstancePortLinesAndSSH(t *testing.T) {
	i := Instance{State: InstanceRunning, Ports: []string{"8888/tcp", "22/tcp", "53/udp"},
		PortMap: []PortBinding{{Port: "22/tcp", Host: "gpu1.example.net", HostPort: 40012}, {Port: "8888/tcp", HostPort: 40011}}}
	want := []string{"8888/tcp -> HOST:40011", "22/tcp -> gpu1.example.net:40012", "53/udp (not published yet)"}
	if d := cmp.Diff(want, i.PortLines()); d != "" {
		t.Errorf("running PortLines mismatch (-want +got):\n%s", d)
	}
	if got := i.SSHCommand(); got != "ssh -p 40012 root@gpu1.example.net" {
		t.Errorf("running SSHCommand = %q", got)
	}
	i.State = InstanceStopped
	if d := cmp.Diff(i.Ports, i.PortLines()); d != "" {
		t.Errorf("stopped PortLines mismatch (-want +got):\n%s", d)
	}
	if got := i.SSHCommand(); got != "" {
		t.Errorf("stopped SSHCommand = %q, want none", got)
	}
	if got := (Instance{State: InstanceRunning}).PortLines(); len(got) != 0 {
		t.Errorf("PortLines without ports = %q", got)
	}
}

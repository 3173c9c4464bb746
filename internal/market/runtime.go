package market

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// This file holds what a renter asks of a container instance besides its
// image and command: published ports, SSH keys, resource limits, templates,
// and the host ports the agent reports back.

// Limits on a container instance's spec.
const (
	MaxPorts   = 16
	MaxSSHKeys = 16
	maxSSHKey  = 16 << 10
)

// ParsePort checks a container port to publish, written "8888/tcp",
// "53/udp" or "8888" (tcp), and returns it in its canonical form.
func ParsePort(s string) (string, error) {
	num, proto, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	n, err := strconv.Atoi(num)
	switch {
	case err != nil || n < 1 || n > 65535:
		return "", fmt.Errorf("port %q: write it as PORT/PROTO with PORT from 1 to 65535, e.g. 8888/tcp", s)
	case proto != "tcp" && proto != "udp":
		return "", fmt.Errorf("port %q: protocol must be tcp or udp", s)
	}
	return strconv.Itoa(n) + "/" + proto, nil
}

// CheckPorts canonicalises a list of ports to publish and rejects
// duplicates and too many.
func CheckPorts(ports []string) ([]string, error) {
	if len(ports) > MaxPorts {
		return nil, fmt.Errorf("%d ports to publish; the limit is %d", len(ports), MaxPorts)
	}
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		c, err := ParsePort(p)
		if err != nil {
			return nil, err
		}
		if slices.Contains(out, c) {
			return nil, fmt.Errorf("port %s is listed twice; list each port once", c)
		}
		out = append(out, c)
	}
	return out, nil
}

// ParsePorts reads a list of container ports to publish written as one
// line of text, such as "8080/tcp, 22/tcp" (commas or spaces between
// them), with the rules of CheckPorts. Blank text is no ports.
func ParsePorts(text string) ([]string, error) {
	return CheckPorts(strings.FieldsFunc(text, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }))
}

// PortRange is a range of host ports, both ends included, that an agent
// publishes container ports on. The zero value is no range.
type PortRange struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

// ParsePortRange reads "40000-40999".
func ParsePortRange(s string) (PortRange, error) {
	if strings.TrimSpace(s) == "" {
		return PortRange{}, nil
	}
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	r := PortRange{first, last}
	if !ok || err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("port range %q: write it as FIRST-LAST, e.g. 40000-40999", s)
	}
	if err := r.Check(); err != nil {
		return PortRange{}, err
	}
	return r, nil
}

// Check rejects a range outside 1024-65535 or with its ends swapped.
func (r PortRange) Check() error {
	if r == (PortRange{}) {
		return nil
	}
	if r.First < 1024 || r.Last > 65535 || r.First > r.Last {
		return fmt.Errorf("port range %d-%d: use FIRST-LAST with 1024 <= FIRST <= LAST <= 65535", r.First, r.Last)
	}
	return nil
}

// Size is the number of ports in the range.
func (r PortRange) Size() int {
	if r == (PortRange{}) {
		return 0
	}
	return r.Last - r.First + 1
}

func (r PortRange) String() string {
	if r == (PortRange{}) {
		return ""
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// PortBinding is where a published container port is reachable: the
// agent reports it once the container runs.
type PortBinding struct {
	Port     string `json:"port"`           // container port, "8888/tcp"
	Host     string `json:"host,omitempty"` // the machine's public address, as its agent was told
	HostPort int    `json:"host_port"`
}

func (b PortBinding) String() string {
	host := b.Host
	if host == "" {
		host = "HOST"
	}
	return fmt.Sprintf("%s -> %s:%d", b.Port, host, b.HostPort)
}

// PortLines says where each published container port of i is reachable
// ("8080/tcp -> gpu1.example.net:40012"), or that it is not published
// yet. An ended instance's host ports are no longer its own: its lines are
// the container ports alone.
func (i Instance) PortLines() []string {
	out := make([]string, 0, len(i.Ports))
	for _, p := range i.Ports {
		line := p
		if i.Active() {
			line = p + " (not published yet)"
			for _, b := range i.PortMap {
				if b.Port == p {
					line = b.String()
					break
				}
			}
		}
		out = append(out, line)
	}
	return out
}

// SSHCommand returns the ssh command that reaches i while it is active
// with port 22/tcp published, or "".
func (i Instance) SSHCommand() string {
	if !i.Active() {
		return ""
	}
	return SSHCommand(i.PortMap)
}

// SSHCommand returns the ssh command that reaches an instance whose port
// 22/tcp is published, or "" when it is not.
func SSHCommand(ports []PortBinding) string {
	for _, b := range ports {
		if b.Port == "22/tcp" && b.HostPort > 0 {
			host := b.Host
			if host == "" {
				host = "HOST"
			}
			return fmt.Sprintf("ssh -p %d root@%s", b.HostPort, host)
		}
	}
	return ""
}

// sshKeyTypes are the public key types accepted for SSH access.
var sshKeyTypes = []string{
	"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
	"sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}

// ParseSSHKey checks one OpenSSH public key line ("ssh-ed25519 AAAA...
// comment") and returns it trimmed. The key blob must decode and name the
// same type as the line, so a private key or a truncated paste is refused.
func ParseSSHKey(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "PRIVATE KEY") {
		return "", fmt.Errorf("this is a private key; give the public key (the .pub file)")
	}
	if len(s) > maxSSHKey {
		return "", fmt.Errorf("SSH key of %d bytes is longer than %d", len(s), maxSSHKey)
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", fmt.Errorf("an SSH public key is one line; give one key per --ssh-key")
	}
	f := strings.Fields(s)
	if len(f) < 2 {
		return "", fmt.Errorf("SSH key %.20q...: want \"TYPE BASE64 [COMMENT]\" as in an id_ed25519.pub file", s)
	}
	if !slices.Contains(sshKeyTypes, f[0]) {
		return "", fmt.Errorf("SSH key type %q is not supported; use one of %s", f[0], strings.Join(sshKeyTypes, ", "))
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return "", fmt.Errorf("SSH key of type %s: the key data is not valid base64", f[0])
	}
	if len(blob) < 4 {
		return "", fmt.Errorf("SSH key of type %s: the key data is truncated", f[0])
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || !bytes.Equal(blob[4:4+n], []byte(f[0])) {
		return "", fmt.Errorf("SSH key of type %s: the key data does not match its type (truncated or edited?)", f[0])
	}
	return strings.Join(f, " "), nil
}

// ParseSSHKeys reads public keys pasted one per line, as in an
// authorized_keys file: blank lines and lines starting with # are
// skipped. Errors name the line.
func ParseSSHKeys(text string) ([]string, error) {
	var keys []string
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(keys) == MaxSSHKeys {
			return nil, fmt.Errorf("more than %d SSH keys; give at most %d", MaxSSHKeys, MaxSSHKeys)
		}
		k, err := ParseSSHKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// CheckSSHKeys validates a renter's public keys.
func CheckSSHKeys(keys []string) ([]string, error) {
	if len(keys) > MaxSSHKeys {
		return nil, fmt.Errorf("%d SSH keys; the limit is %d", len(keys), MaxSSHKeys)
	}
	out := make([]string, 0, len(keys))
	for i, k := range keys {
		c, err := ParseSSHKey(k)
		if err != nil {
			return nil, fmt.Errorf("SSH key %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Limits are the resources a container instance may use. Zero fields are
// filled in by the coordinator from the instance's share of the machine.
type Limits struct {
	CPUMillis int64 `json:"cpu_millis,omitempty"` // 1000 = one core
	MemoryMiB int64 `json:"memory_mib,omitempty"` // without swap
	Pids      int64 `json:"pids,omitempty"`       // processes and threads
	ShmMiB    int64 `json:"shm_mib,omitempty"`    // size of /dev/shm
	DiskGiB   int64 `json:"disk_gib,omitempty"`   // writable layer; only where the storage driver supports it
}

// Default limits that do not scale with the machine.
const (
	DefaultPids = 4096
	MaxPids     = 1 << 20
)

// ShareLimits returns the limits of an instance that rents gpus of a
// machine's total GPUs: its share of CPU, memory and disk, shared memory
// of a quarter of its memory (PyTorch data loaders need more than Docker's
// 64 MiB), and DefaultPids. Zero machine figures give zero (no limit).
func ShareLimits(hw Hardware, gpus int) Limits {
	total := max(len(hw.GPUs), 1)
	gpus = min(max(gpus, 1), total)
	share := func(v int64) int64 { return v * int64(gpus) / int64(total) }
	l := Limits{
		CPUMillis: share(int64(hw.CPUCores) * 1000),
		MemoryMiB: share(hw.RAMMiB),
		Pids:      DefaultPids,
		DiskGiB:   share(hw.DiskGiB),
	}
	l.ShmMiB = l.MemoryMiB / 4
	return l
}

// Resolve fills l's zero fields from def and checks the result against
// the machine: CPU, memory and disk no more than the machine has, shared
// memory within memory.
func (l Limits) Resolve(def Limits, hw Hardware) (Limits, error) {
	fill := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	for _, v := range []int64{l.CPUMillis, l.MemoryMiB, l.Pids, l.ShmMiB, l.DiskGiB} {
		if v < 0 {
			return l, fmt.Errorf("resource limits must not be negative")
		}
	}
	ownMemory := l.MemoryMiB > 0
	fill(&l.CPUMillis, def.CPUMillis)
	fill(&l.MemoryMiB, def.MemoryMiB)
	fill(&l.Pids, def.Pids)
	fill(&l.DiskGiB, def.DiskGiB)
	if l.ShmMiB == 0 {
		// A quarter of the memory: of the renter's own limit when given.
		l.ShmMiB = def.ShmMiB
		if ownMemory || (l.MemoryMiB > 0 && l.ShmMiB > l.MemoryMiB) {
			l.ShmMiB = l.MemoryMiB / 4
		}
	}
	switch {
	case hw.CPUCores > 0 && l.CPUMillis > int64(hw.CPUCores)*1000:
		return l, fmt.Errorf("CPU limit %s cores is above the machine's %d cores", millis(l.CPUMillis), hw.CPUCores)
	case l.CPUMillis > 0 && l.CPUMillis < 10:
		return l, fmt.Errorf("CPU limit %s cores is too small; give at least 0.01", millis(l.CPUMillis))
	case hw.RAMMiB > 0 && l.MemoryMiB > hw.RAMMiB:
		return l, fmt.Errorf("memory limit %d MiB is above the machine's %d MiB", l.MemoryMiB, hw.RAMMiB)
	case l.MemoryMiB > 0 && l.MemoryMiB < 6:
		return l, fmt.Errorf("memory limit %d MiB is too small; Docker needs at least 6 MiB", l.MemoryMiB)
	case l.Pids > MaxPids:
		return l, fmt.Errorf("pids limit %d is above %d", l.Pids, MaxPids)
	case l.MemoryMiB > 0 && l.ShmMiB > l.MemoryMiB:
		return l, fmt.Errorf("shared memory %d MiB is above the memory limit of %d MiB", l.ShmMiB, l.MemoryMiB)
	case hw.DiskGiB > 0 && l.DiskGiB > hw.DiskGiB:
		return l, fmt.Errorf("disk limit %d GiB is above the machine's %d GiB", l.DiskGiB, hw.DiskGiB)
	}
	return l, nil
}

func millis(m int64) string {
	return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64)
}

// Template is a ready-made instance setup for a common case: the image,
// the ports to publish and the command. A renter's own --image, --port or
// command replace the template's.
type Template struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Image       string   `json:"image"`
	Ports       []string `json:"ports"`
	Command     []string `json:"command"`
	SSH         bool     `json:"ssh"` // runs sshd with the renter's keys; needs at least one --ssh-key
}

// sshdStart installs OpenSSH if the image lacks it and runs it in the
// foreground with the keys the agent injects at SSHKeysPath.
const sshdStart = `set -e
if ! command -v sshd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # apt runs as root throughout: the container has no CAP_DAC_OVERRIDE
  # to reach the files of apt's own sandbox user.
  apt-get -o APT::Sandbox::User=root update -qq
  apt-get -o APT::Sandbox::User=root install -y -qq openssh-server >/dev/null
fi
mkdir -p /run/sshd
ssh-keygen -A >/dev/null
`

// SSHKeysPath is where the agent puts the renter's public keys inside a
// container, read-only, one per line. An image's sshd reads it with
// "AuthorizedKeysFile /etc/gpumarket/authorized_keys" (the templates pass
// it on the command line).
const SSHKeysPath = "/etc/gpumarket/authorized_keys"

var templates = []Template{
	{
		Name:        "pytorch",
		Description: "PyTorch with CUDA; SSH as root with your --ssh-key",
		Image:       "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
		Ports:       []string{"22/tcp"},
		Command:     []string{"bash", "-c", sshdStart + "exec /usr/sbin/sshd -D -e -o AuthorizedKeysFile=" + SSHKeysPath + " -o PasswordAuthentication=no"},
		SSH:         true,
	},
	{
		Name:        "jupyter",
		Description: "JupyterLab with PyTorch and CUDA on port 8888; the login token is in `gpumarket instance logs`",
		Image:       "quay.io/jupyter/pytorch-notebook:cuda12-latest",
		Ports:       []string{"8888/tcp"},
		Command:     []string{"start-notebook.py", "--ServerApp.ip=0.0.0.0"},
	},
	{
		Name:        "ssh",
		Description: "Ubuntu 24.04 with an SSH server; SSH as root with your --ssh-key",
		Image:       "ubuntu:24.04",
		Ports:       []string{"22/tcp"},
		Command:     []string{"bash", "-c", sshdStart + "exec /usr/sbin/sshd -D -e -o AuthorizedKeysFile=" + SSHKeysPath + " -o PasswordAuthentication=no"},
		SSH:         true,
	},
}

// Templates returns the instance templates, by name.
func Templates() []Template {
	out := make([]Template, len(templates))
	for i, t := range templates {
		t.Ports, t.Command = slices.Clone(t.Ports), slices.Clone(t.Command)
		out[i] = t
	}
	return out
}

// LookupTemplate returns the template called name.
func LookupTemplate(name string) (Template, error) {
	for _, t := range Templates() {
		if t.Name == name {
			return t, nil
		}
	}
	names := make([]string, len(templates))
	for i, t := range templates {
		names[i] = t.Name
	}
	return Template{}, fmt.Errorf("unknown template %q; use one of %s (gpumarket instance templates)", name, strings.Join(names, ", "))
}

// ApplyTemplate fills req's image, ports and command from its template,
// keeping what the renter gave. A request without a template is returned
// as is.
func ApplyTemplate(req CreateInstanceRequest) (CreateInstanceRequest, error) {
	if req.Template == "" {
		return req, nil
	}
	t, err := LookupTemplate(req.Template)
	if err != nil {
		return req, err
	}
	if req.Image == "" {
		req.Image = t.Image
	}
	if len(req.Ports) == 0 {
		req.Ports = t.Ports
	}
	if len(req.Command) == 0 {
		req.Command = t.Command
	}
	if t.SSH && len(req.SSHKeys) == 0 {
		return req, fmt.Errorf("template %s logs in with SSH keys; give at least one with --ssh-key ~/.ssh/id_ed25519.pub", t.Name)
	}
	return req, nil
}

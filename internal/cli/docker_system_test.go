package cli

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/gpumarket/gpumarket/internal/market"
	"github.com/gpumarket/gpumarket/internal/runner/docker"
)

// TestSystemDockerCLI rents GPUs of a machine whose agent runs containers
// on the real Docker daemon, from the CLI as a renter would: an image with
// a published port, an SSH key and a memory limit; then reads the port
// mapping and the ssh command from 'instance show', reaches the port,
// reads the logs and stops it.
func TestSystemDockerCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("system test with Docker")
	}
	ctx := t.Context()
	ns := "gmsys-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	first := 42000 + int(time.Now().UnixNano()%500)
	pr := market.PortRange{First: first, Last: first + 10}
	runner, err := docker.New(ctx, docker.Options{Namespace: ns, NoGPUDevices: true, PortRange: pr, PublicHost: "127.0.0.1"})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no Docker daemon: %v", err)
		}
		t.Skipf("SKIPPING DOCKER TEST: %v", err)
	}
	t.Cleanup(func() { cleanNamespace(ns) })
	defer runner.Close()

	s := startSystem(t, t.TempDir()+"/gm.db")
	host := s.signup(t, "host@example.com", market.RoleHost)
	actx, cancel := context.WithCancel(s.ctx)
	ag, err := newAgent(actx, agentOptions{StateDir: t.TempDir(), FakeGPUs: "2xRTX 4090", Client: host, Logger: slog.New(slog.DiscardHandler),
		HeartbeatInterval: 200 * time.Millisecond, PollWait: 5 * time.Second, Runner: runner, RunnerName: "docker", PortRange: pr})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(actx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var m market.Machine
	eventually(t, "registration", func() (bool, error) {
		ms, err := host.Machines(s.ctx, false)
		if len(ms) > 0 {
			m = ms[0]
		}
		return len(ms) == 1, err
	})
	if m.Runner != "docker" || m.PortRange != pr {
		t.Fatalf("machine registered with runner %q and ports %v, want docker and %v", m.Runner, m.PortRange, pr)
	}
	price := market.Money(600_000)
	must[market.Machine](t, "price")(host.UpdateMachine(s.ctx, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	must[market.Machine](t, "list")(host.ListMachine(s.ctx, m.ID))

	gm, ok := cliUser(t, s.ctx, s.co.URL)
	ok("signup", "--email", "renter@example.com", "--password", "password-1")
	ok("login", "--email", "renter@example.com", "--password", "password-1")
	must[market.Transfer](t, "deposit")(s.admin.Deposit(s.ctx, market.DepositRequest{Email: "renter@example.com", Amount: market.Tokens(5)}, "d"))

	if out := ok("instance", "templates"); !strings.Contains(out, "pytorch") || !strings.Contains(out, "jupyter") || !strings.Contains(out, "ssh") {
		t.Errorf("instance templates:\n%s", out)
	}
	keyFile := t.TempDir() + "/id_ed25519.pub"
	key := testSSHKey()
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := gm("instance", "create", string(m.ID), "--gpus", "1", "--image", "gpumarket-test:latest", "--ssh-key", keyFile+".missing"); code == 0 || !strings.Contains(errOut, "give a public key file") {
		t.Errorf("missing key file: exit %d, %s", code, errOut)
	}
	if _, errOut, code := gm("instance", "create", string(m.ID), "--gpus", "1", "--image", "gpumarket-test:latest", "--port", "http"); code == 0 || !strings.Contains(errOut, "--port: port \"http\"") {
		t.Errorf("bad port: exit %d, %s", code, errOut)
	}
	out := ok("instance", "create", string(m.ID), "--gpus", "1", "--image", "gpumarket-test:latest",
		"--port", "8888/tcp", "--port", "22/tcp", "--ssh-key", keyFile, "--memory", "256MiB", "--cpus", "0.5",
		"--", "-listen", ":8888", "-cat", market.SSHKeysPath, "-sleep", "300s")
	id := regexp.MustCompile(`instance (i-[a-z0-9]+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("instance create printed no ID:\n%s", out)
	}
	var show string
	eventually(t, "the port mapping in instance show", func() (bool, error) {
		show = ok("instance", "show", id[1])
		return strings.Contains(show, "8888/tcp -> 127.0.0.1:") && strings.Contains(show, "running"), nil
	})
	hp := regexp.MustCompile(`8888/tcp -> 127\.0\.0\.1:(\d+)`).FindStringSubmatch(show)
	sshPort := regexp.MustCompile(`22/tcp -> 127\.0\.0\.1:(\d+)`).FindStringSubmatch(show)
	if hp == nil || sshPort == nil {
		t.Fatalf("instance show lacks the mappings:\n%s", show)
	}
	for _, want := range []string{"running", "ssh -p " + sshPort[1] + " root@127.0.0.1", "SSH keys:", "0.5 CPUs, 256 MiB memory, 64 MiB /dev/shm, 4096 processes"} {
		if !strings.Contains(show, want) {
			t.Errorf("instance show lacks %q:\n%s", want, show)
		}
	}
	port, _ := strconv.Atoi(hp[1])
	if port < pr.First || port > pr.Last {
		t.Errorf("host port %d is outside the machine's range %v", port, pr)
	}
	var greeting string
	eventually(t, "the published port to answer", func() (bool, error) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return false, nil
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		greeting = string(b[:n])
		return n > 0, nil
	})
	if greeting != "hello from testprog\n" {
		t.Errorf("port %d answered %q", port, greeting)
	}
	eventually(t, "the SSH keys in the logs", func() (bool, error) {
		out, _, _ := gm("instance", "logs", id[1])
		return strings.Contains(out, fmt.Sprintf("content: %q", key+"\n")) && strings.Contains(out, "chmod: read-only file system"), nil
	})

	// An image the host must pull, from a registry that never answers:
	// the instance stays starting, 'instance show' says it is pulling, and
	// a stop gives up the pull.
	reg, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	go func() {
		for {
			c, err := reg.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	out = ok("instance", "create", string(m.ID), "--gpus", "1", "--image", reg.Addr().String()+"/slow:1")
	slow := regexp.MustCompile(`instance (i-[a-z0-9]+)`).FindStringSubmatch(out)
	if slow == nil {
		t.Fatalf("instance create printed no ID:\n%s", out)
	}
	eventually(t, "the pull in instance show", func() (bool, error) {
		show = ok("instance", "show", slow[1])
		return strings.Contains(show, "Progress:") && strings.Contains(show, "pulling image "+reg.Addr().String()+"/slow:1"), nil
	})
	if !strings.Contains(show, "starting") {
		t.Errorf("instance pulling its image:\n%s", show)
	}
	ok("instance", "stop", slow[1])
	eventually(t, "the stop during the pull", func() (bool, error) {
		out, _, _ := gm("-o", "json", "instance", "show", slow[1])
		return strings.Contains(out, `"state": "stopped"`), nil
	})

	ok("instance", "stop", id[1])
	eventually(t, "the stop", func() (bool, error) {
		out, _, _ := gm("-o", "json", "instance", "show", id[1])
		return strings.Contains(out, `"state": "stopped"`), nil
	})
	eventually(t, "the container and its network to go", func() (bool, error) {
		cli, err := client.New(client.FromEnv)
		if err != nil {
			return false, err
		}
		defer cli.Close()
		_, nerr := cli.NetworkInspect(s.ctx, ns+"-"+id[1], client.NetworkInspectOptions{})
		cs, err := cli.ContainerList(s.ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", docker.LabelNamespace+"="+ns)})
		return nerr != nil && len(cs.Items) == 0, err
	})
	s.checkLedger(t)
}

// testSSHKey is a well-formed ed25519 public key line.
func testSSHKey() string {
	var blob []byte
	blob = binary.BigEndian.AppendUint32(blob, 11)
	blob = append(blob, "ssh-ed25519"...)
	blob = binary.BigEndian.AppendUint32(blob, 32)
	for i := range 32 {
		blob = append(blob, byte(i*7))
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " renter@laptop"
}

// cleanNamespace removes what a test left on the daemon.
func cleanNamespace(ns string) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := make(client.Filters).Add("label", docker.LabelNamespace+"="+ns)
	if cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f}); err == nil {
		for _, c := range cs.Items {
			cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
		}
	}
	if ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f}); err == nil {
		for _, n := range ns.Items {
			cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{})
		}
	}
}

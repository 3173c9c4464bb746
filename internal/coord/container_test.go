package coord_test

import (
	"encoding/base64"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gpumarket/gpumarket/internal/market"
)

func sshKey() string {
	var blob []byte
	blob = binary.BigEndian.AppendUint32(blob, 11)
	blob = append(blob, "ssh-ed25519"...)
	blob = binary.BigEndian.AppendUint32(blob, 32)
	blob = append(blob, make([]byte, 32)...)
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " renter@laptop"
}

// dockerMachine registers a listed 4-GPU docker machine with a host port
// range of ports ports.
func (e *env) dockerMachine(fp string, ports int) market.Machine {
	hw := market.Hardware{Fingerprint: fp, Hostname: "box", Runner: "docker", CPUCores: 16, RAMMiB: 65536, DiskGiB: 400}
	if ports > 0 {
		hw.PortRange = market.PortRange{First: 40000, Last: 40000 + ports - 1}
	}
	for i := range 4 {
		hw.GPUs = append(hw.GPUs, market.GPU{Index: i, UUID: fp + "-gpu-" + string(rune('a'+i)), Model: "RTX 4090", VRAMMiB: 24564, MinPowerW: 150, MaxPowerW: 450})
	}
	m := must(e.svc.RegisterMachine(e.ctx, e.host, hw))
	price := market.Money(600_000)
	must(e.svc.UpdateMachine(e.ctx, e.host, m.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	return must(e.svc.SetListed(e.ctx, e.host, m.ID, true))
}

func TestCreateContainerInstance(t *testing.T) {
	e := newEnv(t)
	dm := e.dockerMachine("fp-docker", 100)
	narrow := e.dockerMachine("fp-narrow", 1)
	none := e.dockerMachine("fp-none", 0)
	key := sshKey()
	if got := must(e.svc.Machine(e.ctx, e.host, dm.ID)).PortRange; got != (market.PortRange{First: 40000, Last: 40099}) {
		t.Errorf("stored port range %v, want 40000-40099", got)
	}

	inst, err := e.svc.CreateInstance(e.ctx, e.renter, market.CreateInstanceRequest{Machine: dm.ID, GPUs: 2, Template: "pytorch",
		SSHKeys: []string{key + "\n"}, Ports: []string{"8888"}, Limits: market.Limits{MemoryMiB: 8192}})
	if err != nil {
		t.Fatal(err)
	}
	want := market.Limits{CPUMillis: 8000, MemoryMiB: 8192, Pids: market.DefaultPids, ShmMiB: 2048, DiskGiB: 200}
	if inst.Template != "pytorch" || inst.Image != "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime" || len(inst.Command) == 0 ||
		!cmp.Equal(inst.Ports, []string{"8888/tcp"}) || !cmp.Equal(inst.SSHKeys, []string{key}) {
		t.Errorf("created %+v: want the pytorch image and command, the renter's port 8888/tcp and the trimmed key", inst)
	}
	if diff := cmp.Diff(want, inst.Limits); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	stored := e.inst(inst.ID)
	if diff := cmp.Diff(inst.Limits, stored.Limits); diff != "" || !cmp.Equal(stored.Ports, inst.Ports) || !cmp.Equal(stored.SSHKeys, inst.SSHKeys) || stored.Template != "pytorch" {
		t.Errorf("stored instance lost its container fields: %+v (%s)", stored, diff)
	}
	ds := must(e.svc.Desired(e.ctx, e.host, dm.ID, -1, 0))
	if len(ds.Assignments) != 1 || !cmp.Equal(ds.Assignments[0].Ports, []string{"8888/tcp"}) || !cmp.Equal(ds.Assignments[0].SSHKeys, []string{key}) || ds.Assignments[0].Limits != want {
		t.Errorf("assignment %+v lacks the ports, keys or limits", ds.Assignments)
	}

	// The agent reports where it published the port; it is kept.
	ports := []market.PortBinding{{Port: "8888/tcp", Host: "gpu1.example.net", HostPort: 40012}}
	res := must(e.svc.Report(e.ctx, e.host, dm.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: 1, State: market.ObservedRunning, Ports: ports}}}))
	if len(res.Rejected) > 0 {
		t.Fatal(res.Rejected)
	}
	if got := e.inst(inst.ID); !cmp.Equal(got.PortMap, ports) || got.State != market.InstanceRunning {
		t.Errorf("after the report: %s, port map %+v; want running with %+v", got.State, got.PortMap, ports)
	}
	// A later report with the same state but new ports (an adopted
	// container after a restart) still updates them.
	ports[0].HostPort = 40013
	must(e.svc.Report(e.ctx, e.host, dm.ID, market.Report{Instances: []market.InstanceReport{{Instance: inst.ID, Generation: 1, State: market.ObservedRunning, Ports: ports}}}))
	if got := e.inst(inst.ID); !cmp.Equal(got.PortMap, ports) {
		t.Errorf("port map after a change %+v, want %+v", got.PortMap, ports)
	}

	for _, tt := range []struct {
		name string
		req  market.CreateInstanceRequest
		kind market.Kind
		msg  string
	}{
		{"ports on a process machine", market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}, Ports: []string{"80/tcp"}},
			market.Invalid, "runs plain processes: ports, SSH keys, templates and resource limits need a machine with runner docker"},
		{"keys on a process machine", market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Command: []string{"x"}, SSHKeys: []string{key}},
			market.Invalid, "need a machine with runner docker"},
		{"image on a process machine", market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Image: "x:1"},
			market.Invalid, "runs plain processes, not container images"},
		{"template on a process machine", market.CreateInstanceRequest{Machine: e.mach.ID, GPUs: 1, Template: "jupyter"},
			market.Invalid, "template jupyter runs a container image and needs a machine with runner docker"},
		{"no port range", market.CreateInstanceRequest{Machine: none.ID, GPUs: 1, Image: "x:1", Ports: []string{"80/tcp"}},
			market.Invalid, "publishes no ports (its agent runs without --port-range)"},
		{"range too narrow", market.CreateInstanceRequest{Machine: narrow.ID, GPUs: 1, Image: "x:1", Ports: []string{"80/tcp", "443/tcp"}},
			market.Invalid, "2 ports asked but machine " + string(narrow.ID) + " publishes at most 1"},
		{"bad port", market.CreateInstanceRequest{Machine: dm.ID, GPUs: 1, Image: "x:1", Ports: []string{"http"}},
			market.Invalid, "PORT from 1 to 65535"},
		{"bad key", market.CreateInstanceRequest{Machine: dm.ID, GPUs: 1, Image: "x:1", SSHKeys: []string{"ssh-ed25519 nope"}},
			market.Invalid, "SSH key 1:"},
		{"ssh template without keys", market.CreateInstanceRequest{Machine: dm.ID, GPUs: 1, Template: "ssh"},
			market.Invalid, "give at least one with --ssh-key"},
		{"unknown template", market.CreateInstanceRequest{Machine: dm.ID, GPUs: 1, Template: "nope"},
			market.Invalid, "unknown template"},
		{"too much memory", market.CreateInstanceRequest{Machine: dm.ID, GPUs: 1, Image: "x:1", Limits: market.Limits{MemoryMiB: 1 << 20}},
			market.Invalid, "above the machine's 65536 MiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.CreateInstance(e.ctx, e.renter, tt.req)
			wantKind(t, err, tt.kind, tt.msg)
		})
	}
	e.check()
}

// The runner's account of an exit (out of memory, killed) reaches the
// renter in the instance's reason and event.
func TestExitDetailReachesRenter(t *testing.T) {
	for _, tt := range []struct {
		code      int
		msg, want string
	}{
		{137, "exited 137 (out of memory)", "exited with code 137 (out of memory)"},
		{127, "exited 127: exec failed", "exited with code 127: exec failed"},
		{3, "exited 3", "exited with code 3"},
		{0, "", "exited with code 0"},
		{1, "the container was removed outside the agent", "exited with code 1: the container was removed outside the agent"},
	} {
		e := newEnv(t)
		inst := must(e.create(1))
		code := tt.code
		must(e.svc.Report(e.ctx, e.host, inst.Machine, market.Report{Instances: []market.InstanceReport{
			{Instance: inst.ID, Generation: 1, State: market.ObservedExited, ExitCode: &code, Message: tt.msg}}}))
		if got := e.inst(inst.ID); got.Reason != tt.want {
			t.Errorf("reason after %q = %q, want %q", tt.msg, got.Reason, tt.want)
		}
	}
}

// --auto places a container only on a docker machine and a bare command
// only on a process machine, whichever is cheaper.
func TestAutoPlacementByRunner(t *testing.T) {
	e := newEnv(t) // a process machine at 0.60
	dm := e.dockerMachine("fp-docker", 10)
	price := market.Money(900_000) // dearer than the process machine
	must(e.svc.UpdateMachine(e.ctx, e.host, dm.ID, market.MachineUpdate{PricePerGPUHour: &price}))
	for _, tt := range []struct {
		name string
		req  market.CreateInstanceRequest
		want market.MachineID
	}{
		{"image", market.CreateInstanceRequest{Image: "x:1"}, dm.ID},
		{"template", market.CreateInstanceRequest{Template: "jupyter"}, dm.ID},
		{"command", market.CreateInstanceRequest{Command: []string{"sleep", "1"}}, e.mach.ID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Auto, tt.req.GPUs = "gpu_name=RTX_4090", 1
			inst, err := e.svc.CreateInstance(e.ctx, e.renter, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if inst.Machine != tt.want {
				t.Errorf("placed on %s, want %s", inst.Machine, tt.want)
			}
		})
	}
}

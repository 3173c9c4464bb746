package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// ptxArchs are the GPU generations the kernels must compile for: Maxwell
// (the PTX's .target) to Hopper, the newest that ptxas of CUDA 11.8
// (Debian 12) knows.
var ptxArchs = []string{"sm_50", "sm_61", "sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90"}

var spillRE = regexp.MustCompile(`(\d+) bytes spill stores, (\d+) bytes spill loads`)
var regsRE = regexp.MustCompile(`Used (\d+) registers`)

// NVIDIA's PTX assembler, the compiler a driver runs when it loads the
// module, accepts the kernels for every generation, without spilling
// registers to memory, and with few enough registers for a Block-thread
// block. The PTX interpreter of emu_test.go checks what the kernels
// compute; this checks what the driver accepts, which needs no GPU.
// scripts/test fetches ptxas (GPUMARKET_PTXAS); without it the test
// skips, and fails in CI.
func TestPTXAssembles(t *testing.T) {
	ptxas := os.Getenv("GPUMARKET_PTXAS")
	if ptxas == "" {
		ptxas, _ = exec.LookPath("ptxas")
	}
	if ptxas == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no ptxas (GPUMARKET_PTXAS unset, none on PATH): scripts/test fetches it from Debian's nvidia-cuda-toolkit as root")
		}
		t.Skip("no ptxas (GPUMARKET_PTXAS unset, none on PATH): the kernels are not assembled; scripts/test fetches it as root")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "kernels.ptx")
	if err := os.WriteFile(src, []byte(PTX()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, arch := range ptxArchs {
		out, err := exec.Command(ptxas, "-arch="+arch, "-v", src, "-o", filepath.Join(dir, arch+".cubin")).CombinedOutput()
		if err != nil {
			t.Errorf("ptxas -arch=%s: %v\n%s", arch, err, out)
			continue
		}
		for _, m := range spillRE.FindAllSubmatch(out, -1) {
			if string(m[1]) != "0" || string(m[2]) != "0" {
				t.Errorf("%s: a kernel spills registers (%s)", arch, m[0])
			}
		}
		regs := regsRE.FindAllSubmatch(out, -1)
		if len(regs) != 3 {
			t.Errorf("%s: ptxas reported %d kernels' registers, want 3:\n%s", arch, len(regs), out)
		}
		for _, m := range regs {
			if n, _ := strconv.Atoi(string(m[1])); n*Block > 65536 {
				t.Errorf("%s: a kernel uses %d registers a thread, too many for %d-thread blocks", arch, n, Block)
			}
		}
	}
}

package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// machine self-test runs the whole challenge locally (here on fake GPUs and
// the CPU solver): every GPU passes, in both output formats; a GPU index
// the machine lacks is a usage error that says so.
func TestMachineSelfTest(t *testing.T) {
	cli := func(args ...string) (string, string, int) {
		var out, errOut strings.Builder
		code := run(context.Background(), append([]string{"--config", t.TempDir() + "/c.json"}, args...), strings.NewReader(""), &out, &errOut, nil)
		return out.String(), errOut.String(), code
	}
	out, errOut, code := cli("machine", "self-test", "--fake-gpus", "2xRTX 4090")
	if code != 0 || strings.Count(out, "pass") != 2 || !strings.Contains(out, "16 x 64x64") || !strings.Contains(errOut, "GPU 1 (NVIDIA GeForce RTX 4090): 16 tiles of 64x64") {
		t.Fatalf("code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	out, errOut, code = cli("-o", "json", "machine", "self-test", "--fake-gpus", "2xH100", "--gpu", "1")
	var res []selfTestResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 {
		t.Fatalf("code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if r := res[0]; r.Index != 1 || !r.Pass || r.Solver != "cpu" || r.Work != 16*64*64*64 || r.Rate <= 0 || r.Rate != float64(r.Work)/r.Seconds {
		t.Errorf("result %+v", r)
	}
	_, errOut, code = cli("machine", "self-test", "--fake-gpus", "1xH100", "--gpu", "3")
	if code != 2 || !strings.Contains(errOut, "no GPU 3 (it has 1)") {
		t.Errorf("code %d, stderr %s", code, errOut)
	}
}

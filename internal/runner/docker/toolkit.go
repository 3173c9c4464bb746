package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Flaw is a known container-escape flaw of the NVIDIA Container Toolkit and
// the first version that fixes it.
type Flaw struct {
	CVE   string
	Fixed Version
}

// ToolkitFlaws are the container-escape flaws a GPU host must not run
// with. Versions from NVIDIA's CVE records: CVE-2024-0132 affects 1.16.1
// and earlier; CVE-2025-23266 ("NVIDIAScape") affects 1.17.7 and earlier.
var ToolkitFlaws = []Flaw{
	{CVE: "CVE-2024-0132", Fixed: Version{1, 16, 2, 0}},
	{CVE: "CVE-2025-23266", Fixed: Version{1, 17, 8, 0}},
}

// Version is a toolkit version; RC is the release candidate number, 0 for
// a release (which comes after all its candidates).
type Version struct {
	Major, Minor, Patch, RC int
}

func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.RC > 0 {
		s += fmt.Sprintf("-rc.%d", v.RC)
	}
	return s
}

// Less reports whether v comes before w.
func (v Version) Less(w Version) bool {
	a := [4]int{v.Major, v.Minor, v.Patch, rcRank(v.RC)}
	b := [4]int{w.Major, w.Minor, w.Patch, rcRank(w.RC)}
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func rcRank(rc int) int {
	if rc == 0 {
		return 1 << 30
	}
	return rc
}

// The version line of nvidia-ctk ("NVIDIA Container Toolkit CLI version
// 1.17.8"), of the runtime hook ("NVIDIA Container Runtime Hook version
// 1.14.3") and of nvidia-container-cli ("cli-version: 1.16.1").
var versionRE = regexp.MustCompile(`(?m)(?:[Vv]ersion:?|cli-version:)\s*v?(\d+)\.(\d+)\.(\d+)(?:[-~]rc\.?(\d+))?`)

// ParseToolkitVersion reads the version from the output of nvidia-ctk
// --version, nvidia-container-toolkit --version or nvidia-container-cli
// --version.
func ParseToolkitVersion(out string) (Version, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return Version{}, fmt.Errorf("no version in %.80q", strings.TrimSpace(out))
	}
	var v Version
	for i, p := range []*int{&v.Major, &v.Minor, &v.Patch, &v.RC} {
		if m[i+1] == "" {
			continue
		}
		n, err := strconv.Atoi(m[i+1])
		if err != nil {
			return Version{}, fmt.Errorf("bad version number %q", m[i+1])
		}
		*p = n
	}
	return v, nil
}

// SafeToolkit is the oldest toolkit version without any of ToolkitFlaws.
func SafeToolkit() Version {
	var v Version
	for _, f := range ToolkitFlaws {
		if v.Less(f.Fixed) {
			v = f.Fixed
		}
	}
	return v
}

// ToolkitFlawsOf returns the flaws version v has.
func ToolkitFlawsOf(v Version) []Flaw {
	var out []Flaw
	for _, f := range ToolkitFlaws {
		if v.Less(f.Fixed) {
			out = append(out, f)
		}
	}
	return out
}

// CheckToolkit reads the installed toolkit's version and returns an error
// saying which version to install when it has a known container-escape
// flaw, or when its version cannot be read (GPU workloads are refused
// rather than run on a host that may let them escape).
func CheckToolkit(ctx context.Context, read func(context.Context) (string, error)) error {
	out, err := read(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the NVIDIA Container Toolkit version (%v); GPU workloads are refused until `nvidia-ctk --version` shows %s or later", err, SafeToolkit())
	}
	v, err := ParseToolkitVersion(out)
	if err != nil {
		return fmt.Errorf("cannot read the NVIDIA Container Toolkit version: %v; GPU workloads are refused until `nvidia-ctk --version` shows %s or later", err, SafeToolkit())
	}
	flaws := ToolkitFlawsOf(v)
	if len(flaws) == 0 {
		return nil
	}
	cves := make([]string, len(flaws))
	for i, f := range flaws {
		cves[i] = f.CVE
	}
	return fmt.Errorf("the host's NVIDIA Container Toolkit %s has a known container-escape flaw (%s); GPU workloads are refused until the host installs NVIDIA Container Toolkit %s or later and restarts the agent",
		v, strings.Join(cves, ", "), SafeToolkit())
}

// ToolkitVersion runs nvidia-ctk --version, else nvidia-container-cli
// --version, and returns the output of the first that answers.
func ToolkitVersion(ctx context.Context) (string, error) {
	var errs []error
	for _, bin := range []string{"nvidia-ctk", "nvidia-container-cli", "nvidia-container-toolkit"} {
		cmd := exec.CommandContext(ctx, bin, "--version")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s --version: %w", bin, err))
			continue
		}
		return out.String(), nil
	}
	return "", errors.Join(errs...)
}

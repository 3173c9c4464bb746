package docker

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// Recorded outputs of nvidia-ctk --version, nvidia-container-cli --version
// and the runtime hook, of safe and flawed versions.
func TestCheckToolkit(t *testing.T) {
	for _, tt := range []struct {
		name, out string
		readErr   error
		want      string // "" = allowed; else part of the error
	}{
		{"ctk 1.17.8", "NVIDIA Container Toolkit CLI version 1.17.8\ncommit: f202b80a9b9d0db00d9b1d73c0128c8962c55f4d\n", nil, ""},
		{"ctk 1.18.0", "NVIDIA Container Toolkit CLI version 1.18.0\ncommit: 2a3b4c5\n", nil, ""},
		{"ctk 2.0.0", "NVIDIA Container Toolkit CLI version 2.0.0\n", nil, ""},
		{"ctk 1.17.7", "NVIDIA Container Toolkit CLI version 1.17.7\ncommit: 6e7a3b1\n", nil,
			"NVIDIA Container Toolkit 1.17.7 has a known container-escape flaw (CVE-2025-23266); GPU workloads are refused until the host installs NVIDIA Container Toolkit 1.17.8 or later"},
		{"ctk 1.17.8 rc", "NVIDIA Container Toolkit CLI version 1.17.8-rc.1\ncommit: abc\n", nil, "1.17.8-rc.1 has a known container-escape flaw (CVE-2025-23266)"},
		{"ctk 1.16.2", "NVIDIA Container Toolkit CLI version 1.16.2\ncommit: a5a5833c14a15fd9c86bcece85d5ec6621b65652\n", nil,
			"1.16.2 has a known container-escape flaw (CVE-2025-23266)"},
		{"ctk 1.16.1", "NVIDIA Container Toolkit CLI version 1.16.1\ncommit: a470818ba7d9166be282cd0039dd2fc9b0a34d73\n", nil,
			"1.16.1 has a known container-escape flaw (CVE-2024-0132, CVE-2025-23266); GPU workloads are refused until the host installs NVIDIA Container Toolkit 1.17.8 or later"},
		{"cli 1.14.6", "cli-version: 1.14.6\nlib-version: 1.14.6\nbuild date: 2024-02-28T09:53+00:00\nbuild revision: 5f1...\n", nil, "1.14.6 has a known container-escape flaw (CVE-2024-0132, CVE-2025-23266)"},
		{"cli 1.17.9", "cli-version: 1.17.9\nlib-version: 1.17.9\n", nil, ""},
		{"hook 1.13.5", "NVIDIA Container Runtime Hook version 1.13.5\ncommit: 6b8589dcb4dead72ab64f14a5912886e6165c079\n", nil, "1.13.5 has a known container-escape flaw"},
		{"garbage", "command not found\n", nil, "cannot read the NVIDIA Container Toolkit version"},
		{"not installed", "", errors.New(`exec: "nvidia-ctk": executable file not found in $PATH`), "cannot read the NVIDIA Container Toolkit version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckToolkit(t.Context(), func(context.Context) (string, error) { return tt.out, tt.readErr })
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("CheckToolkit = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("CheckToolkit = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	for _, tt := range []struct {
		a, b Version
		want bool
	}{
		{Version{1, 16, 1, 0}, Version{1, 16, 2, 0}, true},
		{Version{1, 16, 2, 0}, Version{1, 16, 2, 0}, false},
		{Version{1, 17, 8, 1}, Version{1, 17, 8, 0}, true}, // a candidate comes before its release
		{Version{1, 17, 8, 0}, Version{1, 17, 8, 2}, false},
		{Version{2, 0, 0, 0}, Version{1, 99, 99, 0}, false},
	} {
		if got := tt.a.Less(tt.b); got != tt.want {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	if got := SafeToolkit(); got != (Version{1, 17, 8, 0}) {
		t.Errorf("SafeToolkit = %v, want 1.17.8", got)
	}
}

package cli

import (
	"bytes"
	"testing"

	"github.com/gpumarket/gpumarket/internal/market"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"512MiB", 512 << 20, false},
		{"16GiB", 16 << 30, false},
		{"16G", 16 << 30, false},
		{"1.5gb", 3 << 29, false},
		{"2TiB", 2 << 40, false},
		{"4096", 4096, false},
		{" 8 GiB ", 8 << 30, false},
		{"lots", 0, true},
		{"12PB", 0, true},
		{"-1G", 0, true},
		{"", 0, true},
	} {
		got, err := parseSize(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestWriteChunksMarksSystemLines(t *testing.T) {
	var out, errOut bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errOut}
	err := writeChunks(env, []market.LogChunk{
		{Stream: "system", Data: "pulling image x\npull x: abc Pull complete\n"},
		{Stream: "stdout", Data: "hello\n"},
		{Stream: "stderr", Data: "oops\n"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "hello\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := errOut.String(), "[gpumarket] pulling image x\n[gpumarket] pull x: abc Pull complete\noops\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
}

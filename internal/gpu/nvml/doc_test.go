package nvml

import "testing"

func TestCUDAVersion(t *testing.T) {
	for in, want := range map[int]string{12040: "12.4", 11080: "11.8", 13000: "13.0", 0: "", 12090: "12.9"} {
		if got := cudaVersion(in); got != want {
			t.Errorf("cudaVersion(%d) = %q, want %q", in, got, want)
		}
	}
}

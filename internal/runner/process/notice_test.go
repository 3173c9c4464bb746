package process

import (
	"strings"
	"testing"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// TestNoticeFileBeforeSIGTERM: the notice file exists when SIGTERM arrives
// and names when SIGKILL follows.
func TestNoticeFileBeforeSIGTERM(t *testing.T) {
	r, _ := New(t.TempDir())
	ctx := t.Context()
	script := `trap 'echo "term, notice: $(cat "$GPUMARKET_NOTICE_FILE")"; exit 0' TERM
test -e "$GPUMARKET_NOTICE_FILE" && echo early notice
echo up; while :; do sleep 0.05; done`
	if err := r.Start(ctx, assignment("i-notice", script)); err != nil {
		t.Fatal(err)
	}
	logsUntil(t, r, "i-notice", "stdout", "up")
	if err := r.Stop(ctx, "i-notice", 7*time.Second); err != nil {
		t.Fatal(err)
	}
	out := logsUntil(t, r, "i-notice", "stdout", "term, notice: {")
	if strings.Contains(out, "early notice") || !strings.Contains(out, `"instance":"i-notice"`) || !strings.Contains(out, "sigkill_at") {
		t.Errorf("output %q: want the notice, with its SIGKILL time, only at SIGTERM", out)
	}
	if got := state(t, r, "i-notice"); got.State != market.ObservedStopped {
		t.Errorf("state %+v, want stopped", got)
	}
}

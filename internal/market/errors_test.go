package market

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorKindsAndMessages(t *testing.T) {
	base := Errorf("create instance", Conflict, "machine m-1 has 0 of 4 GPUs free")
	wrapped := fmt.Errorf("handler: %w", &Error{Op: "api", Err: base})
	if got := KindOf(wrapped); got != Conflict {
		t.Errorf("KindOf(wrapped) = %v, want conflict", got)
	}
	if got := Message(wrapped); got != "machine m-1 has 0 of 4 GPUs free" {
		t.Errorf("Message = %q", got)
	}
	if got := KindOf(errors.New("boom")); got != Internal {
		t.Errorf("KindOf(plain) = %v, want internal", got)
	}
	if KindOf(nil) != Internal || IsKind(nil, Internal) {
		t.Error("nil error handling")
	}
	for k := KindOther; k <= Internal; k++ {
		if KindFromString(k.String()) != k {
			t.Errorf("KindFromString(%q) != %v", k.String(), k)
		}
	}
}

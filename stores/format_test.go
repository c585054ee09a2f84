package stores_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores"
)

// TestFormatCheck: only f's own mark passes; a later version of f is
// newer, not corrupt; every other mark is corrupt; both errors name the
// mark read and the one this build writes.
func TestFormatCheck(t *testing.T) {
	f := stores.Format{Name: "convergo-test", Version: 3}
	for _, tc := range []struct {
		mark string
		want error // nil, ErrNewerFormat or ErrCorrupt
	}{
		{"convergo-test-3", nil},
		{"convergo-test-4", stores.ErrNewerFormat},
		{"convergo-test-17", stores.ErrNewerFormat},
		{"convergo-test-2", stores.ErrCorrupt},
		{"convergo-test-04", stores.ErrCorrupt},
		{"convergo-test-+4", stores.ErrCorrupt},
		{"convergo-test-x", stores.ErrCorrupt},
		{"convergo-other-4", stores.ErrCorrupt},
		{"", stores.ErrCorrupt},
	} {
		err := f.Check(tc.mark, stores.ErrCorrupt)
		if tc.want == nil {
			if err != nil {
				t.Errorf("Check(%q): got %v, want nil", tc.mark, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("Check(%q): got %v, want %v", tc.mark, err, tc.want)
		}
		if errors.Is(err, stores.ErrNewerFormat) && errors.Is(err, stores.ErrCorrupt) {
			t.Errorf("Check(%q): got %v, both newer and corrupt", tc.mark, err)
		}
		if err != nil && (!strings.Contains(err.Error(), `"`+tc.mark+`"`) || !strings.Contains(err.Error(), f.Mark())) {
			t.Errorf("Check(%q): got %q, want it to name %q and %q", tc.mark, err, tc.mark, f.Mark())
		}
	}
}

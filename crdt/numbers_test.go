package crdt

import (
	"encoding/hex"
	"errors"
	"testing"
)

// The number rule of JSON documents: the text of an integer reads
// exactly; anything else reads as its float64 does in JavaScript.
func TestAppendJSONNumber(t *testing.T) {
	for _, tc := range []struct{ in, hex string }{
		{"0", "00"}, {"-0", "00"}, {"1.0", "01"}, {"1e3", "1903e8"}, {"-1", "20"},
		{"-0.0", "f98000"}, {"0.5", "f93800"}, {"9007199254740991", "1b001fffffffffffff"},
		{"9007199254740992", "1b0020000000000000"}, {"9007199254740992.0", "fa5a000000"},
		{"18446744073709551615", "1bffffffffffffffff"}, {"-18446744073709551616", "3bffffffffffffffff"},
		{"1e300", "fb7e37e43c8800759c"},
	} {
		b, err := AppendJSONNumber(nil, tc.in)
		if err != nil || hex.EncodeToString(b) != tc.hex {
			t.Errorf("%s: got %x %v, want %s", tc.in, b, err, tc.hex)
		}
	}
	for _, bad := range []string{"18446744073709551616", "1e400", "x", ""} {
		if _, err := AppendJSONNumber(nil, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: got %v, want ErrInvalid", bad, err)
		}
	}
}

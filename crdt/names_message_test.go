package crdt

import (
	"strings"
	"testing"
)

// A refusal names the character it refuses as the name holds it: a
// character of several bytes whole, a byte that begins no character
// escaped, never the first byte of a character read as a character of its
// own ("é" was named 'Ã').
func TestForbiddenCharacterNamed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(string) error
		in    string
		want  string
	}{
		{"collection, two bytes", ValidateCollection, "né", `forbidden character "é" at 1`},
		{"collection, four bytes", ValidateCollection, "n😀", `forbidden character "😀" at 1`},
		{"collection, not UTF-8", ValidateCollection, "n\xc3", `forbidden character "\xc3" at 1`},
		{"collection, ASCII", ValidateCollection, "n/x", `forbidden character "/" at 1`},
		{"replica, two bytes", ValidateReplica, "rä", `forbidden character "ä"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want it to say %s", err, tc.want)
			}
		})
	}
}

package scope

import (
	"strings"
	"testing"
)

// A refused parameter name names the character it refuses as the name
// holds it, never the first byte of a character of several read as a
// character of its own ("é" was named 'Ã').
func TestParamForbiddenCharacterNamed(t *testing.T) {
	for in, want := range map[string]string{
		"claims.né":  `forbidden character "é"`,
		"claims.a😀":  `forbidden character "😀"`,
		"claims.a/b": `forbidden character "/"`,
	} {
		err := validateParam(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want it to say %s", in, err, want)
		}
	}
}

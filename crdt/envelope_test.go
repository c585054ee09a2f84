package crdt

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// A known key whose value is null is malformed, in an envelope and in the
// envelopes nested in it that the codec decodes by reflection; null under
// a key the struct does not know is ignored, as any value there.
func TestUnmarshalEnvelopeNull(t *testing.T) {
	type inner struct {
		A string `cbor:"1,keyasint"`
	}
	type env struct {
		Text  string            `cbor:"1,keyasint"`
		Bytes []byte            `cbor:"2,keyasint"`
		Ptr   *uint64           `cbor:"3,keyasint,omitempty"`
		In    inner             `cbor:"4,keyasint"`
		Ins   []inner           `cbor:"5,keyasint"`
		InP   *inner            `cbor:"6,keyasint"`
		Texts []string          `cbor:"7,keyasint"`
		Map   map[string]uint64 `cbor:"8,keyasint"`
		Any   any               `cbor:"9,keyasint"`
		Raw   cbor.RawMessage   `cbor:"10,keyasint"`
	}
	for _, tc := range []struct {
		name, hex string
		malformed bool
	}{
		{"no null", "a201617802420102", false},
		{"null under an unknown key", "a2016178" + "1863f6", false},
		{"null text", "a101f6", true},
		{"null bytes", "a102f6", true},
		{"null pointer", "a103f6", true},
		{"null nested envelope", "a104f6", true},
		{"null in a nested envelope", "a104a101f6", true},
		{"null under an unknown key of a nested envelope", "a104a102f6", false},
		{"null in an envelope of a list", "a10582a10161" + "78" + "a101f6", true},
		{"null in an envelope behind a pointer", "a106a101f6", true},
		{"null item of a list of text", "a10781f6", true},
		{"null value of a map", "a108a16161f6", true},
		{"null byte in a byte string", "a10241f6", false},
		{"null under an interface", "a109f6", false},
		{"null raw message", "a10af6", true},
		{"raw message holding a null", "a10a81f6", false},
		{"null in a list under an interface", "a10981f6", false},
	} {
		b, err := hex.DecodeString(tc.hex)
		if err != nil {
			t.Fatal(err)
		}
		var v env
		err = UnmarshalEnvelope(b, &v)
		if got := errors.Is(err, ErrMalformed); got != tc.malformed {
			t.Errorf("%s (%s): %v, want malformed %v", tc.name, tc.hex, err, tc.malformed)
		}
	}
}

package scope_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

// FuzzDecode holds Decode to three promises on hostile bytes: it never
// panics, it fails only with the documented errors, and what it accepts
// re-encodes to bytes that decode to the same predicate, in wire and in
// text form.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`all`, `none`,
		`owner == $sub or team in $claims.teams`,
		`status in ["open", "doing"] and (members has $sub or public == true)`,
		`n == cbor(f93c00) or b == cbor(4101) or m == {"a":[1,2.5]}`,
		`x in [1, $sub, $claims.a.b]`,
	} {
		p, err := scope.Parse(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.Encode())
	}
	f.Add([]byte{0x9f, 0x63, 'a', 'l', 'l', 0xff})
	f.Add([]byte{0x83, 0x62, 'e', 'q', 0x61, 'a', 0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := scope.Decode(data)
		if err != nil {
			if !errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrInvalid) && !errors.Is(err, crdt.ErrTooLarge) {
				t.Fatalf("Decode(%x): undocumented error %v", data, err)
			}
			return
		}
		enc := p.Encode()
		q, err := scope.Decode(enc)
		if err != nil || !bytes.Equal(q.Encode(), enc) {
			t.Fatalf("Decode(%x) = %s, but its encoding %x decodes to %v, %v", data, p, enc, q, err)
		}
		txt, err := scope.Parse(p.String())
		if err != nil || !bytes.Equal(txt.Encode(), enc) {
			t.Fatalf("Decode(%x) = %s, which parses back to %v, %v", data, p, txt, err)
		}
		_ = p.Match(crdt.Record{ID: "x", Fields: map[string]crdt.Field{"a": {Stamp: crdt.Stamp{Wall: 1, Replica: "r"}, Value: []byte{0x81, 0x01}}}})
		if _, err := p.Bind(scope.Params{"sub": "s", "claims": map[string]any{"a": []any{"x"}}}); err != nil &&
			!errors.Is(err, scope.ErrUnbound) && !errors.Is(err, crdt.ErrInvalid) && !errors.Is(err, crdt.ErrTooLarge) {
			t.Fatalf("Bind: undocumented error %v", err)
		}
	})
}

package proto

import (
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// IsPush knows a push by its beginning, {0: "push", ..., whatever follows
// (so that an unreadable push is refused as a push), and reads any other
// message whole for its type.
func TestIsPush(t *testing.T) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sub, err := EncodeMessage(Sub{Collection: "notes"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want bool
	}{
		{"push", enc(map[int]any{0: "push", 2: []int{}}), true},
		{"push, rest unreadable", []byte("\xa2\x00\x64push\x02\x9f\xff"), true},
		{"push, 24 keys", append([]byte("\xb8\x18\x00\x64push"), 0xc1), true},
		{"push, key 0 last", []byte("\xa2\x02\x80\x00\x64push"), true},
		{"sub", sub, false},
		{"pushed", enc(map[int]any{0: "pushed", 1: []int{}}), false},
		{"key 0 not text", []byte("\xa2\x00\x01\x02\x80"), false},
		{"indefinite map", []byte("\xbf\x00\x64push\xff"), false},
		{"truncated head", []byte("\xb9\x00"), false},
		{"empty", nil, false},
		{"not a map", []byte("\x84\x00\x64push"), false},
	} {
		if got := IsPush(c.data); got != c.want {
			t.Errorf("%s (%x): IsPush %v, want %v", c.name, c.data, got, c.want)
		}
	}
}

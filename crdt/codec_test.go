package crdt

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestRecordRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "record")
		b := mustEncode(t, r)
		back, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		if !back.Equal(r) {
			t.Fatalf("round trip: got %+v, want %+v", back, r)
		}
		if b2 := mustEncode(t, back); !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs: %x vs %x", b2, b)
		}
	})
}

func TestChangesRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		recs := rapid.SliceOfN(genRecord(), 0, 5).Draw(t, "records")
		cs := make([]Change, len(recs))
		for i, r := range recs {
			cs[i] = Change{Collection: rapid.SampledFrom([]string{"todos", "tenant42.notes", "_x"}).Draw(t, "coll"), Record: r}
		}
		b, err := EncodeChanges(cs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeChanges(b)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		if len(back) != len(cs) {
			t.Fatalf("got %d changes, want %d", len(back), len(cs))
		}
		for i := range cs {
			if back[i].Collection != cs[i].Collection || !back[i].Record.Equal(cs[i].Record) {
				t.Fatalf("change %d: got %+v, want %+v", i, back[i], cs[i])
			}
		}
	})
}

func TestDecodeLimits(t *testing.T) {
	big := strings.Repeat("x", MaxValueBytes)
	bigVal, err := EncodeValue(big)
	if err != nil {
		t.Fatal(err)
	}
	many := Record{ID: "m", Fields: map[string]Field{}}
	one, _ := EncodeValue(1)
	for i := range MaxFieldsPerRecord + 1 {
		many.Fields[strings.Repeat("f", 1+i%200)+string(rune('A'+i/200))] = Field{Stamp: Stamp{Wall: 1, Replica: "a"}, Value: one}
	}
	huge := Record{ID: "h", Fields: map[string]Field{}}
	half, _ := EncodeValue(strings.Repeat("y", MaxValueBytes-10))
	for _, n := range []string{"a", "b", "c"} {
		huge.Fields[n] = Field{Stamp: Stamp{Wall: 1, Replica: "a"}, Value: half}
	}
	tests := []struct {
		name string
		r    Record
		want error
	}{
		{"value over limit", SetField("x", "f", bigVal, Stamp{Wall: 1, Replica: "a"}), ErrTooLarge},
		{"too many fields", many, ErrTooLarge},
		{"record over limit", huge, ErrTooLarge},
		{"bad field name", SetField("x", "a\x00", one, Stamp{Wall: 1, Replica: "a"}), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustEncode(t, tt.r)
			if _, err := DecodeRecord(b); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err := tt.r.Validate(); !errors.Is(err, tt.want) {
				t.Fatalf("Validate: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestValidateNames(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) error
		in    string
		ok    bool
	}{
		{"collection plain", ValidateCollection, "todos", true},
		{"collection dotted", ValidateCollection, "tenant42.notes-v2", true},
		{"collection leading dot", ValidateCollection, ".x", false},
		{"collection brace", ValidateCollection, "a{b}", false},
		{"collection colon", ValidateCollection, "a:b", false},
		{"collection slash", ValidateCollection, "a/b", false},
		{"collection empty", ValidateCollection, "", false},
		{"collection long", ValidateCollection, strings.Repeat("a", MaxCollectionBytes+1), false},
		{"replica ok", ValidateReplica, "Ab-9_x", true},
		{"replica dot", ValidateReplica, "a.b", false},
		{"id unicode", ValidateID, "täsk/1 ✓", true},
		{"id newline", ValidateID, "a\nb", false},
		{"id C1 control", ValidateID, "a\u0085", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.check(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

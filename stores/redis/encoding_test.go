package redis

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// These tests need no Redis: they cover the Go side of the record blob, the
// notification payload and the options.

func TestBlobRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord("r1", "é", strings.Repeat("i", 300)).Draw(t, "record")
		seq := rapid.Uint64Range(0, MaxSeq).Draw(t, "seq")
		if err := checkRecord(r); err != nil {
			t.Fatalf("generated record refused: %v", err)
		}
		b := encodeBlob(seq, r)
		if len(b) != blobSize(r) {
			t.Fatalf("blob of %d bytes, blobSize says %d", len(b), blobSize(r))
		}
		gotSeq, got, err := decodeBlob(r.ID, b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if gotSeq != seq || !got.Equal(r) {
			t.Fatalf("round trip: got seq %d %+v, want seq %d %+v", gotSeq, got, seq, r)
		}
		// From a string, sharing its memory: the same record.
		gotSeq, got, err = decodeStringBlob(r.ID, string(b))
		if err != nil || gotSeq != seq || !got.Equal(r) {
			t.Fatalf("round trip from a string: got seq %d %+v, %v; want seq %d %+v", gotSeq, got, err, seq, r)
		}
	})
}

// TestDecodeBlobRefusesDamage checks that a truncated blob fails to decode,
// unless it was cut between two fields, where it decodes to fewer fields,
// and that arbitrary bytes never make the decoder panic.
func TestDecodeBlobRefusesDamage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord("r").Draw(t, "record")
		b := encodeBlob(7, r)
		cut := rapid.IntRange(0, len(b)-1).Draw(t, "cut")
		if _, got, err := decodeBlob("r", b[:cut]); err == nil && len(got.Fields) >= len(r.Fields) {
			t.Fatalf("blob cut at %d of %d decoded to %+v", cut, len(b), got)
		}
		if _, got, err := decodeStringBlob("r", string(b[:cut])); err == nil && len(got.Fields) >= len(r.Fields) {
			t.Fatalf("string blob cut at %d of %d decoded to %+v", cut, len(b), got)
		}
		junk := rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "junk")
		_, _, _ = decodeBlob("r", junk)
		_, _, _ = decodeStringBlob("r", string(junk))
	})
}

func TestDecodeBlobErrors(t *testing.T) {
	valid := encodeBlob(1, crdt.SetField("r", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "a"}))
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"empty", nil},
		{"short header", valid[:5]},
		{"bad version", append([]byte{2}, valid[1:]...)},
		{"cut in field name", valid[:len(valid)-10]},
		{"bad flag", func() []byte {
			b := bytes.Clone(valid)
			b[len(b)-6] = 7 // flag byte before valueLen(4) and the value(1)
			return b
		}()},
		{"duplicate field", append(bytes.Clone(valid), valid[blobHeader+stampFixed:]...)},
		{"value longer than blob", append(bytes.Clone(valid[:len(valid)-5]), 0, 0, 1, 0, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, r, err := decodeBlob("r", tc.blob); !errors.Is(err, errMalformedBlob) {
				t.Fatalf("got %+v, %v; want errMalformedBlob", r, err)
			}
			if _, r, err := decodeStringBlob("r", string(tc.blob)); !errors.Is(err, errMalformedBlob) {
				t.Fatalf("from a string: got %+v, %v; want errMalformedBlob", r, err)
			}
		})
	}
}

func TestCheckRecord(t *testing.T) {
	ok := crdt.Stamp{Wall: 1, Replica: "a"}
	big := make([]byte, crdt.MaxValueBytes+1)
	many := map[string]crdt.Field{}
	for i := range crdt.MaxFieldsPerRecord + 1 {
		many[fmt.Sprint(i)] = crdt.Field{Stamp: ok}
	}
	for _, tc := range []struct {
		name string
		rec  crdt.Record
		want error
	}{
		{"set", crdt.SetField("r", "f", []byte{1}, ok), nil},
		{"unset", crdt.UnsetField("r", "f", ok), nil},
		{"delete", crdt.DeleteRecord("r", ok), nil},
		{"empty change", crdt.Record{ID: "r"}, nil},
		{"zero field stamp", crdt.SetField("r", "f", []byte{1}, crdt.Stamp{}), stores.ErrInvalid},
		{"negative wall", crdt.SetField("r", "f", []byte{1}, crdt.Stamp{Wall: -1, Replica: "a"}), stores.ErrInvalid},
		{"wall past MaxWall", crdt.DeleteRecord("r", crdt.Stamp{Wall: crdt.MaxWall + 1, Replica: "a"}), stores.ErrInvalid},
		{"bad replica", crdt.SetField("r", "f", []byte{1}, crdt.Stamp{Wall: 1, Replica: "a b"}), stores.ErrInvalid},
		{"long replica", crdt.SetField("r", "f", []byte{1}, crdt.Stamp{Wall: 1, Replica: strings.Repeat("a", 65)}), stores.ErrInvalid},
		{"long field name", crdt.SetField("r", strings.Repeat("f", crdt.MaxFieldNameBytes+1), []byte{1}, ok), stores.ErrInvalid},
		{"empty value", crdt.SetField("r", "f", []byte{}, ok), stores.ErrInvalid},
		{"value too large", crdt.SetField("r", "f", big, ok), stores.ErrTooLarge},
		{"too many fields", crdt.Record{ID: "r", Fields: many}, stores.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRecord(tc.rec)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseNotification(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    stores.Notification
		ok      bool
	}{
		{"todos 42", stores.Notification{Collection: "todos", Seq: 42}, true},
		{"tenant.a-b_c 9007199254740992", stores.Notification{Collection: "tenant.a-b_c", Seq: 1 << 53}, true},
		{"todos", stores.Notification{}, false},
		{"todos -1", stores.Notification{}, false},
		{"todos 1 2", stores.Notification{}, false},
		{"{todos} 1", stores.Notification{}, false},
		{" 1", stores.Notification{}, false},
		{"", stores.Notification{}, false},
	} {
		got, ok := parseNotification(tc.payload)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseNotification(%q): got %+v, %v; want %+v, %v", tc.payload, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"cluster", Options{Addrs: []string{"a:1", "b:2"}}, true},
		{"prefix", Options{KeyPrefix: "app:"}, true},
		{"brace in prefix", Options{KeyPrefix: "a{b"}, false},
		{"negative db", Options{DB: -1}, false},
		{"db with cluster", Options{DB: 1, Cluster: true}, false},
		{"db with several addrs", Options{DB: 1, Addrs: []string{"a:1", "b:2"}}, false},
		{"negative pool", Options{PoolSize: -1}, false},
		{"negative dial timeout", Options{DialTimeout: -time.Second}, false},
		{"no read timeout", Options{ReadTimeout: -1}, true},
		{"negative write timeout", Options{WriteTimeout: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.validateOpen()
			if tc.ok != (err == nil) {
				t.Fatalf("got %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, stores.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
	d := Options{}.withDefaults()
	if len(d.Addrs) != 1 || d.Addrs[0] != DefaultAddr || d.ClientName != DefaultClientName ||
		d.DialTimeout != DefaultDialTimeout || d.ReadTimeout != DefaultReadTimeout ||
		d.WriteTimeout != DefaultWriteTimeout || d.MaxRetries != DefaultMaxRetries || d.Logger == nil {
		t.Errorf("defaults: got %+v", d)
	}
	if got := (Options{MaxRetries: -5}).withDefaults().MaxRetries; got != -1 {
		t.Errorf("negative MaxRetries: got %d, want -1 (no retries)", got)
	}
}

func TestNewRefusesNilClient(t *testing.T) {
	if _, err := New(nil, Options{}); !errors.Is(err, stores.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
}

// TestCBORSizeBound checks the bound the merge script relies on to skip the
// exact size computation: a record's CBOR encoding is at most its blob's
// length plus its id's length plus 4 bytes per field plus 5. The records
// use the largest numbers, ids, names and replica ids the limits allow,
// where CBOR heads are longest.
func TestCBORSizeBound(t *testing.T) {
	replica := rapid.SampledFrom([]string{"a", strings.Repeat("r", 23), strings.Repeat("r", 24), strings.Repeat("r", crdt.MaxReplicaBytes)})
	stamp := rapid.Custom(func(t *rapid.T) crdt.Stamp {
		return crdt.Stamp{
			Wall:    rapid.SampledFrom([]int64{1, 24, 1 << 32, crdt.MaxWall}).Draw(t, "wall"),
			Logical: rapid.SampledFrom([]uint32{0, 24, 1 << 16, 1<<32 - 1}).Draw(t, "logical"),
			Replica: replica.Draw(t, "replica"),
		}
	})
	// The worst case meets the bound exactly: every head at its longest
	// (a 512-byte id, 256-byte names, at least 256 fields, the largest
	// stamps with 64-byte replica ids) and every field unset.
	top := crdt.Stamp{Wall: crdt.MaxWall, Logical: 1<<32 - 1, Replica: strings.Repeat("r", crdt.MaxReplicaBytes)}
	worst := crdt.Record{ID: strings.Repeat("i", crdt.MaxIDBytes), Deleted: top, Fields: map[string]crdt.Field{}}
	for i := range 300 {
		worst.Fields[fmt.Sprintf("%0*d", crdt.MaxFieldNameBytes, i)] = crdt.Field{Stamp: top}
	}
	if size, bound := len(crdt.AppendRecord(nil, worst)), len(encodeBlob(0, worst))+len(worst.ID)+4*len(worst.Fields)+5; size != bound {
		t.Fatalf("worst case: CBOR size %d, bound %d; want them equal", size, bound)
	}
	rapid.Check(t, func(t *rapid.T) {
		r := crdt.Record{ID: strings.Repeat("i", rapid.SampledFrom([]int{1, 23, 24, 255, 256, crdt.MaxIDBytes}).Draw(t, "id"))}
		if rapid.Bool().Draw(t, "deleted") {
			r.Deleted = stamp.Draw(t, "delete")
		}
		for i := range rapid.SampledFrom([]int{0, 1, 23, 24, 300}).Draw(t, "fields") {
			n := rapid.SampledFrom([]int{1, 23, 24, 255, crdt.MaxFieldNameBytes}).Draw(t, "name")
			name := fmt.Sprintf("%0*d", n, i)[:n]
			if len(name) < n || r.Fields[name].Stamp != (crdt.Stamp{}) {
				continue
			}
			f := crdt.Field{Stamp: stamp.Draw(t, "stamp")}
			if rapid.Bool().Draw(t, "set") {
				f.Value = []byte{0xf5}
			}
			if r.Fields == nil {
				r.Fields = map[string]crdt.Field{}
			}
			r.Fields[name] = f
		}
		size := len(crdt.AppendRecord(nil, r))
		bound := len(encodeBlob(MaxSeq, r)) + len(r.ID) + 4*len(r.Fields) + 5
		if size > bound {
			t.Fatalf("CBOR size %d exceeds the bound %d", size, bound)
		}
	})
}

// FuzzDecodeBlob feeds arbitrary bytes to the blob decoder, which reads
// what Redis holds: it must not panic, and what it accepts must encode and
// decode back to the same record.
func FuzzDecodeBlob(f *testing.F) {
	st := crdt.Stamp{Wall: 1 << 40, Logical: 3, Replica: "a"}
	f.Add(encodeBlob(0, crdt.Record{ID: "r"}))
	f.Add(encodeBlob(9, crdt.SetField("r", "title", []byte{0x64, 'm', 'i', 'l', 'k'}, st)))
	f.Add(encodeBlob(1<<53, crdt.Record{ID: "r", Deleted: st, Fields: map[string]crdt.Field{"a": {Stamp: st}, "b": {Stamp: st, Value: []byte{0xf6}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, r, err := decodeBlob("r", b)
		if err != nil {
			return
		}
		seq2, r2, err := decodeBlob("r", encodeBlob(seq, r))
		if err != nil || seq2 != seq || !r2.Equal(r) {
			t.Fatalf("accepted blob does not round-trip: %d %+v -> %d %+v, %v", seq, r, seq2, r2, err)
		}
	})
}

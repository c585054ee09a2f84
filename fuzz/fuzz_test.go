package fuzz

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Run one target for a minute with, for example,
//
//	go test ./fuzz -run '^$' -fuzz '^FuzzDecodeRecord$' -fuzztime 60s
//
// The seed corpus lives in testdata/fuzz/<target>/ and runs with plain
// `go test ./fuzz`; a failing input the fuzzer finds is written there too.

// typedDecodeError fails t unless err wraps one of the decode sentinels.
func typedDecodeError(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrInvalid) && !errors.Is(err, crdt.ErrTooLarge) {
		t.Fatalf("%s: error %q wraps none of ErrMalformed, ErrInvalid, ErrTooLarge", what, err)
	}
}

func encodeRecord(t *testing.T, r crdt.Record) []byte {
	t.Helper()
	b, err := crdt.EncodeRecord(r)
	if err != nil {
		t.Fatalf("encode %+v: %v", r, err)
	}
	return b
}

// FuzzDecodeRecord: decoding never panics, fails only with typed errors,
// and what decodes re-encodes to bytes that decode to the same record and
// re-encode to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := crdt.DecodeRecord(data)
		if err != nil {
			typedDecodeError(t, "decode record", err)
			return
		}
		enc := encodeRecord(t, r)
		if len(enc) > len(data) {
			t.Fatalf("re-encoding grew %d bytes to %d: deterministic encoding is the shortest", len(data), len(enc))
		}
		back, err := crdt.DecodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\ninput %x\nencoded %x", err, data, enc)
		}
		if !back.Equal(r) {
			t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", back, r)
		}
		if again := encodeRecord(t, back); !bytes.Equal(again, enc) {
			t.Fatalf("encoding not stable:\nfirst  %x\nsecond %x", enc, again)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded record fails Validate: %v", err)
		}
		// Values of a decoded record are canonical.
		for name, fl := range r.Fields {
			if fl.Value != nil {
				if err := crdt.CanonicalValue(fl.Value); err != nil {
					t.Fatalf("field %q decoded with a non-canonical value %x: %v", name, fl.Value, err)
				}
			}
		}
	})
}

// FuzzDecodeChanges is FuzzDecodeRecord for batches of changes.
func FuzzDecodeChanges(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, err := crdt.DecodeChanges(data)
		if err != nil {
			typedDecodeError(t, "decode changes", err)
			return
		}
		enc, err := crdt.EncodeChanges(cs)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		back, err := crdt.DecodeChanges(enc)
		if err != nil {
			t.Fatalf("re-encoded changes do not decode: %v\ninput %x\nencoded %x", err, data, enc)
		}
		if len(back) != len(cs) {
			t.Fatalf("round trip: %d changes, want %d", len(back), len(cs))
		}
		for i := range cs {
			if back[i].Collection != cs[i].Collection || !back[i].Record.Equal(cs[i].Record) {
				t.Fatalf("round trip changed change %d:\n got %+v\nwant %+v", i, back[i], cs[i])
			}
			if err := crdt.ValidateCollection(cs[i].Collection); err != nil {
				t.Fatalf("decoded change %d has an invalid collection: %v", i, err)
			}
		}
		again, err := crdt.EncodeChanges(back)
		if err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("encoding not stable (err %v):\nfirst  %x\nsecond %x", err, enc, again)
		}
	})
}

// FuzzDecodeValue: DecodeValue into an interface never panics, fails only
// with typed errors, and a decoded value re-encodes stably.
func FuzzDecodeValue(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var v any
		if err := crdt.DecodeValue(data, &v); err != nil {
			typedDecodeError(t, "decode value", err)
			return
		}
		enc, err := crdt.EncodeValue(v)
		if err != nil {
			return // some decoded Go values (maps with NaN keys, say) have no encoding; not a decode bug
		}
		var w any
		if err := crdt.DecodeValue(enc, &w); err != nil {
			t.Fatalf("re-encoded value does not decode: %v\ninput %x\nencoded %x", err, data, enc)
		}
		again, err := crdt.EncodeValue(w)
		if err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("encoding not stable (err %v):\nfirst  %x\nsecond %x", err, enc, again)
		}
	})
}

// FuzzCanonicalValue holds the hand-written canonical check to the
// reflection-based codec and to the envelopes values travel in:
//   - an accepted value decodes, re-encodes to the very same bytes, and
//     decodes inside a record and a change batch;
//   - bytes that decode and re-encode to themselves, within the size and
//     value nesting limits, are accepted.
//
// Go cannot hold a map keyed by an array or a map in an interface value, so
// DecodeValue refuses such values although they are canonical (the JS
// client decodes them into a Map); for those only the envelope check runs.
func FuzzCanonicalValue(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		cerr := crdt.CanonicalValue(data)
		var v any
		derr := crdt.DecodeValue(data, &v)
		if cerr != nil {
			typedDecodeError(t, "canonical value", cerr)
			if derr == nil && len(data) <= crdt.MaxValueBytes && nesting(v) <= crdt.MaxValueNestedLevels {
				if enc, err := crdt.EncodeValue(v); err == nil && bytes.Equal(enc, data) {
					t.Fatalf("CanonicalValue refused %x (%v), but it decodes and re-encodes to itself", data, cerr)
				}
			}
			return
		}
		rec := crdt.SetField("r", "f", data, crdt.Stamp{Wall: 1, Replica: "a"})
		if err := rec.Validate(); err != nil {
			t.Fatalf("CanonicalValue accepted %x, but a record holding it is invalid: %v", data, err)
		}
		batch, err := crdt.EncodeChanges([]crdt.Change{{Collection: "c", Record: rec}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := crdt.DecodeChanges(batch); err != nil {
			t.Fatalf("CanonicalValue accepted %x, but a change batch holding it does not decode: %v", data, err)
		}
		if derr != nil {
			if strings.Contains(derr.Error(), "invalid map key type") {
				return // a map keyed by an array or map: see above
			}
			t.Fatalf("CanonicalValue accepted %x, but DecodeValue refuses it: %v", data, derr)
		}
		enc, err := crdt.EncodeValue(v)
		if err != nil {
			t.Fatalf("CanonicalValue accepted %x, but its decoded form %#v does not encode: %v", data, v, err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("CanonicalValue accepted %x, but it re-encodes as %x", data, enc)
		}
	})
}

// nesting returns how many arrays and maps deep a decoded value goes.
func nesting(v any) int {
	d := 0
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			d = max(d, nesting(e))
		}
		return d + 1
	case map[any]any:
		for k, e := range x {
			d = max(d, nesting(k), nesting(e))
		}
		return d + 1
	}
	return 0
}

// FuzzMergeLaws decodes up to three records from arbitrary bytes and checks
// the semilattice laws on what decodes: merge is commutative, associative
// and idempotent (byte-for-byte, on normalized records), agrees with
// normalizing after the fact, and reports a change exactly when the record
// changed.
func FuzzMergeLaws(f *testing.F) {
	f.Fuzz(func(t *testing.T, ab, bb, cb []byte) {
		a, errA := crdt.DecodeRecord(ab)
		b, errB := crdt.DecodeRecord(bb)
		c, errC := crdt.DecodeRecord(cb)
		for _, err := range []error{errA, errB, errC} {
			if err != nil {
				typedDecodeError(t, "decode record", err)
			}
		}
		if errA != nil || errB != nil {
			return
		}
		b.ID = a.ID // merge is defined on states of one record
		na, nb := a.Normalize(), b.Normalize()

		ab1, changed := crdt.Merge(na, nb)
		if changed == na.Equal(ab1) {
			t.Fatalf("Merge reported changed=%v; record equal before and after: %v", changed, !changed)
		}
		ba1, _ := crdt.Merge(nb, na)
		if x, y := encodeRecord(t, ab1), encodeRecord(t, ba1); !bytes.Equal(x, y) {
			t.Fatalf("not commutative:\na∨b %x\nb∨a %x", x, y)
		}
		if m, changed := crdt.Merge(ab1, ab1); changed || !m.Equal(ab1) {
			t.Fatalf("not idempotent: m∨m changed=%v", changed)
		}
		if m, changed := crdt.Merge(ab1, na); changed || !m.Equal(ab1) {
			t.Fatalf("(a∨b)∨a changed=%v: merge must absorb what it already holds", changed)
		}
		// Merging unnormalized input then normalizing gives the same state.
		raw, _ := crdt.Merge(a, b)
		if x, y := encodeRecord(t, raw.Normalize()), encodeRecord(t, ab1); !bytes.Equal(x, y) {
			t.Fatalf("normalize(a∨b) != norm(a)∨norm(b):\n%x\n%x", x, y)
		}
		// A merged state survives the wire.
		if back, err := crdt.DecodeRecord(encodeRecord(t, ab1)); err == nil && !back.Equal(ab1) {
			t.Fatalf("merged record changed in a round trip")
		}
		if ab1.Exists() != (len(ab1.Values()) > 0) {
			t.Fatalf("Exists()=%v but Values() has %d entries", ab1.Exists(), len(ab1.Values()))
		}
		if errC != nil {
			return
		}
		c.ID = a.ID
		nc := c.Normalize()
		left, _ := crdt.Merge(ab1, nc)
		bc, _ := crdt.Merge(nb, nc)
		right, _ := crdt.Merge(na, bc)
		if x, y := encodeRecord(t, left), encodeRecord(t, right); !bytes.Equal(x, y) {
			t.Fatalf("not associative:\n(a∨b)∨c %x\na∨(b∨c) %x", x, y)
		}
	})
}

// FuzzDecodeCompact: a message that carries records (a pull answer, a
// changes message, a push body) in either stamp form (docs/protocol.md,
// "Compact stamps") decodes without panicking or fails with a typed error;
// what decodes is valid, within the record limit in its plain (stored)
// form, and survives the compact encoding both ways.
func FuzzDecodeCompact(f *testing.F) {
	// The principal's prefix a push is read with: the prefix of the
	// compact vectors' first replica, so their pushes by device part are
	// seeds that decode.
	const fuzzPrefix = "abcdefghij234567"
	// The session a live push is read in: the vectors' first replica, and
	// the base of most of their live pushes.
	session := proto.Session{Replica: fuzzPrefix + "_V1StGXR8_Z5jdHi6B-myT0", Base: 1_764_720_000_000}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzLivePush(t, data, session)
		var p proto.PullResponse
		if err := proto.Decode(data, &p); err != nil {
			typedDecodeError(t, "decode pull answer", err)
		} else {
			checkCompactRecords(t, p.Records)
			enc, _ := p.MarshalCBOR()
			var back proto.PullResponse
			if err := proto.Decode(enc, &back); err != nil {
				t.Fatalf("re-encoded answer does not decode: %v\ninput %x\nencoded %x", err, data, enc)
			}
			sameRecords(t, back.Records, p.Records)
		}
		if m, err := proto.DecodeServerMessage(data); err == nil {
			if ch, ok := m.(proto.Changes); ok {
				checkCompactRecords(t, ch.Records)
			}
		} else if !errors.Is(err, proto.ErrUnknownType) {
			typedDecodeError(t, "decode server message", err)
		}
		// Read as the server reads a push: with the principal's prefix, so
		// key 9 (the replica named by its device part) is explored too.
		push, err := proto.DecodePush(data, fuzzPrefix)
		if err != nil {
			typedDecodeError(t, "decode push", err)
			return
		}
		ok := decodedChanges(t, "decode pushed change", push.Changes, push.Refused)
		if crdt.ValidateReplica(push.Replica) != nil {
			return
		}
		enc, err := proto.Encode(proto.PushRequest{Replica: push.Replica, Changes: ok, Prefix: push.Prefix})
		if err != nil {
			t.Fatal(err)
		}
		back, err := proto.DecodePush(enc, fuzzPrefix)
		if err != nil || back.Refused != nil || len(back.Changes) != len(ok) || back.Replica != push.Replica {
			t.Fatalf("re-encoded push does not decode (%v, %v)\ninput %x\nencoded %x", err, back.Refused, data, enc)
		}
		sameChanges(t, "push", back.Changes, ok)
	})
}

// fuzzLivePush reads data as the server reads a push over the live
// session s: what decodes is valid and survives the encoding both ways.
func fuzzLivePush(t *testing.T, data []byte, s proto.Session) {
	push, err := proto.DecodePushLive(data, s)
	if err != nil {
		typedDecodeError(t, "decode live push", err)
		return
	}
	ok := decodedChanges(t, "decode live pushed change", push.Changes, push.Refused)
	enc, err := proto.EncodeMessage(proto.PushLive{Changes: ok, Versions: push.Versions, Session: s})
	if err != nil {
		t.Fatal(err)
	}
	back, err := proto.DecodePushLive(enc, s)
	if err != nil || back.Refused != nil || len(back.Changes) != len(ok) {
		t.Fatalf("re-encoded live push does not decode (%v, %v)\ninput %x\nencoded %x", err, back.Refused, data, enc)
	}
	sameChanges(t, "live push", back.Changes, ok)
}

// decodedChanges returns the pushed changes that decoded (refused says
// why the others did not, as a typed decode error), each checked valid.
func decodedChanges(t *testing.T, what string, changes []crdt.Change, refused []error) []crdt.Change {
	t.Helper()
	var ok []crdt.Change
	for i, c := range changes {
		if refused != nil && refused[i] != nil {
			typedDecodeError(t, what, refused[i])
			continue
		}
		checkCompactRecords(t, []crdt.Record{c.Record})
		ok = append(ok, c)
	}
	return ok
}

// sameChanges fails t unless a round trip of the pushed changes want gave
// them back (got holds at least as many).
func sameChanges(t *testing.T, what string, got, want []crdt.Change) {
	t.Helper()
	for i := range want {
		if got[i].Collection != want[i].Collection || !got[i].Record.Equal(want[i].Record) {
			t.Fatalf("%s round trip changed change %d:\n got %+v\nwant %+v", what, i, got[i], want[i])
		}
	}
}

func checkCompactRecords(t *testing.T, rs []crdt.Record) {
	t.Helper()
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded record fails Validate: %v", err)
		}
		if n := len(crdt.AppendRecord(nil, r)); n > crdt.MaxRecordBytes {
			t.Fatalf("decoded record of %d bytes in plain form, over %d", n, crdt.MaxRecordBytes)
		}
	}
}

func sameRecords(t *testing.T, got, want []crdt.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("round trip: %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Fatalf("round trip changed record %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

package dynamodb

import (
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	dt "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

func TestAttributeCBOR(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   st.AttributeValue
		want any // what the CBOR decodes to (crdt.DecodeValue's JSON-friendly types)
	}{
		{"string", &st.AttributeValueMemberS{Value: "héllo"}, "héllo"},
		{"empty string", &st.AttributeValueMemberS{Value: ""}, ""},
		{"integer", &st.AttributeValueMemberN{Value: "42"}, int64(42)},
		{"negative integer", &st.AttributeValueMemberN{Value: "-7"}, int64(-7)},
		{"largest uint64", &st.AttributeValueMemberN{Value: "18446744073709551615"}, uint64(18446744073709551615)},
		{"exponent integer", &st.AttributeValueMemberN{Value: "1e3"}, int64(1000)},
		{"integral decimal", &st.AttributeValueMemberN{Value: "5.000"}, int64(5)},
		{"decimal", &st.AttributeValueMemberN{Value: "2.5"}, 2.5},
		{"beyond 64 bits", &st.AttributeValueMemberN{Value: "1e30"}, 1e30},
		{"38 digits", &st.AttributeValueMemberN{Value: "0.12345678901234567890123456789012345678"}, 0.12345678901234568},
		{"binary", &st.AttributeValueMemberB{Value: []byte{0, 1, 2}}, []byte{0, 1, 2}},
		{"true", &st.AttributeValueMemberBOOL{Value: true}, true},
		{"null", &st.AttributeValueMemberNULL{Value: true}, nil},
		{"list", &st.AttributeValueMemberL{Value: []st.AttributeValue{&st.AttributeValueMemberS{Value: "a"}, &st.AttributeValueMemberN{Value: "1"}}}, []any{"a", int64(1)}},
		{"map", &st.AttributeValueMemberM{Value: map[string]st.AttributeValue{"b": &st.AttributeValueMemberBOOL{}, "a": &st.AttributeValueMemberL{}}}, map[string]any{"a": []any{}, "b": false}},
		{"string set sorted", &st.AttributeValueMemberSS{Value: []string{"pear", "apple", "fig"}}, []any{"apple", "fig", "pear"}},
		{"number set sorted by value", &st.AttributeValueMemberNS{Value: []string{"10", "-2.5", "9"}}, []any{-2.5, int64(9), int64(10)}},
		{"binary set sorted", &st.AttributeValueMemberBS{Value: [][]byte{{2}, {1, 9}, {1}}}, []any{[]byte{1}, []byte{1, 9}, []byte{2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := attributeCBOR(tc.in)
			if err != nil {
				t.Fatalf("attributeCBOR: %v", err)
			}
			if err := crdt.CanonicalValue(enc); err != nil {
				t.Fatalf("value %x is not canonical: %v", enc, err)
			}
			var got any
			if err := crdt.DecodeValue(enc, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestAttributeCBORRefuses(t *testing.T) {
	deep := st.AttributeValue(&st.AttributeValueMemberS{Value: "x"})
	for range maxAttributeDepth + 1 {
		deep = &st.AttributeValueMemberL{Value: []st.AttributeValue{deep}}
	}
	for _, tc := range []struct {
		name string
		in   st.AttributeValue
	}{
		{"not a number", &st.AttributeValueMemberN{Value: "12abc"}},
		{"out of float range", &st.AttributeValueMemberN{Value: "1e400"}},
		{"too deep", deep},
		{"too large", &st.AttributeValueMemberB{Value: make([]byte, crdt.MaxValueBytes)}},
		{"unknown member", &st.UnknownUnionMember{Tag: "X"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := attributeCBOR(tc.in); err == nil {
				t.Fatalf("got value %x, want an error", v)
			}
		})
	}
}

// TestAttributeSetsDeterministic checks that a set maps to one value
// whatever order the stream lists its members in.
func TestAttributeSetsDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		members := rapid.SliceOfDistinct(rapid.StringMatching(`-?[0-9]{1,5}(\.[0-9]{1,3})?`), func(s string) string {
			f, _, _ := big.ParseFloat(s, 10, 64, big.ToNearestEven)
			return f.Text('g', 20)
		}).Draw(t, "members")
		perm := rapid.Permutation(members).Draw(t, "perm")
		a, err := attributeCBOR(&st.AttributeValueMemberNS{Value: members})
		if err != nil {
			t.Fatal(err)
		}
		b, err := attributeCBOR(&st.AttributeValueMemberNS{Value: perm})
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Fatalf("set %v and its permutation %v map to %x and %x", members, perm, a, b)
		}
	})
}

// TestCaptureStampOrder checks that stamps of captures of one millisecond
// order like their sequence numbers, that a later wall time wins whatever
// the sequence numbers, and that malformed sequence numbers are refused.
func TestCaptureStampOrder(t *testing.T) {
	const wall = 1_700_000_000_000
	rapid.Check(t, func(t *rapid.T) {
		digits := rapid.StringMatching(`[1-9][0-9]{20,39}`)
		a, b := digits.Draw(t, "a"), digits.Draw(t, "b")
		pa, err := padSeq(a)
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := padSeq(b)
		sa, err := captureStamp(DefaultStreamReplica, crdt.Timestamp{Wall: wall}, pa)
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := captureStamp(DefaultStreamReplica, crdt.Timestamp{Wall: wall}, pb)
		na, _ := new(big.Int).SetString(a, 10)
		nb, _ := new(big.Int).SetString(b, 10)
		if got, want := sa.Compare(sb), na.Cmp(nb); got != want {
			t.Fatalf("stamps of %s and %s compare %d, sequence numbers %d", a, b, got, want)
		}
	})
	p9, _ := padSeq("900000000000000000000")
	p1, _ := padSeq("100000000000000000000")
	early, _ := captureStamp(DefaultStreamReplica, crdt.Timestamp{Wall: wall}, p9)
	late, _ := captureStamp(DefaultStreamReplica, crdt.Timestamp{Wall: wall + 1}, p1)
	if early.Compare(late) >= 0 {
		t.Fatalf("stamp %v of an earlier millisecond does not sort before %v", early, late)
	}
	counted, _ := captureStamp(DefaultStreamReplica, crdt.Timestamp{Wall: wall, Logical: 1}, p1)
	if early.Compare(counted) >= 0 {
		t.Fatalf("stamp %v of a lower counter does not sort before %v", early, counted)
	}
	for _, bad := range []string{"", "12a", strings.Repeat("1", 41)} {
		if _, err := padSeq(bad); err == nil {
			t.Errorf("sequence number %q: no error", bad)
		}
	}
}

func streamRecord(event st.OperationType, seq string, keys, newImage, oldImage map[string]st.AttributeValue) st.Record {
	created := time.UnixMilli(1_700_000_000_000)
	return st.Record{EventName: event, Dynamodb: &st.StreamRecord{
		ApproximateCreationDateTime: &created, SequenceNumber: &seq,
		Keys: keys, NewImage: newImage, OldImage: oldImage,
	}}
}

func fkeys(pk string, sk string) map[string]st.AttributeValue {
	return map[string]st.AttributeValue{attrPK: &st.AttributeValueMemberS{Value: pk}, attrSK: &st.AttributeValueMemberN{Value: sk}}
}

func withKeys(keys map[string]st.AttributeValue, attrs map[string]st.AttributeValue) map[string]st.AttributeValue {
	out := map[string]st.AttributeValue{}
	for k, v := range keys {
		out[k] = v
	}
	for k, v := range attrs {
		out[k] = v
	}
	return out
}

// foreignChange is readForeign stamped with stamp, as the consumer does
// once the ledger gave the wall time.
func foreignChange(rec st.Record, stamp crdt.Stamp) (crdt.Change, bool, error) {
	w, ok, err := readForeign(rec)
	if !ok || err != nil || w.empty() {
		return crdt.Change{}, false, err
	}
	return w.change(stamp), true, nil
}

func TestForeignChange(t *testing.T) {
	const seq = "000000000000000000042"
	stamp := crdt.Stamp{Wall: 1_700_000_000_500, Replica: DefaultStreamReplica + "-0000000000000000000000000000000000000042"}
	k := fkeys("todos#a#1", "0")
	title := &st.AttributeValueMemberS{Value: "x"}
	other := &st.AttributeValueMemberS{Value: "y"}
	done := &st.AttributeValueMemberBOOL{Value: true}
	for _, tc := range []struct {
		name   string
		rec    st.Record
		want   crdt.Change
		ignore bool
	}{
		{
			name: "insert sets every attribute",
			rec:  streamRecord(st.OperationTypeInsert, seq, k, withKeys(k, map[string]st.AttributeValue{"title": title}), nil),
			want: crdt.Change{Collection: "todos", Record: crdt.SetField("a#1", "title", mustCBOR(t, title), stamp)},
		},
		{
			name: "modify unsets removed attributes",
			rec: streamRecord(st.OperationTypeModify, seq, k,
				withKeys(k, map[string]st.AttributeValue{"title": title}),
				withKeys(k, map[string]st.AttributeValue{"title": title, "gone": title})),
			want: crdt.Change{Collection: "todos", Record: crdt.Record{ID: "a#1", Fields: map[string]crdt.Field{
				"gone": {Stamp: stamp},
			}}},
		},
		{
			// D2: SET done = true leaves title to its own (maybe newer) stamp.
			name: "modify sets only changed attributes",
			rec: streamRecord(st.OperationTypeModify, seq, k,
				withKeys(k, map[string]st.AttributeValue{"title": title, "done": done}),
				withKeys(k, map[string]st.AttributeValue{"title": title})),
			want: crdt.Change{Collection: "todos", Record: crdt.SetField("a#1", "done", mustCBOR(t, done), stamp)},
		},
		{
			name: "modify of a changed value",
			rec: streamRecord(st.OperationTypeModify, seq, k,
				withKeys(k, map[string]st.AttributeValue{"title": other}),
				withKeys(k, map[string]st.AttributeValue{"title": title})),
			want: crdt.Change{Collection: "todos", Record: crdt.SetField("a#1", "title", mustCBOR(t, other), stamp)},
		},
		{
			name: "sets compare as sets",
			rec: streamRecord(st.OperationTypeModify, seq, k,
				withKeys(k, map[string]st.AttributeValue{"tags": &st.AttributeValueMemberSS{Value: []string{"b", "a"}}}),
				withKeys(k, map[string]st.AttributeValue{"tags": &st.AttributeValueMemberSS{Value: []string{"a", "b"}}})),
			ignore: true,
		},
		{
			name:   "modify that changed nothing",
			rec:    streamRecord(st.OperationTypeModify, seq, k, withKeys(k, map[string]st.AttributeValue{"title": title}), withKeys(k, map[string]st.AttributeValue{"title": title})),
			ignore: true,
		},
		{
			name: "remove deletes",
			rec:  streamRecord(st.OperationTypeRemove, seq, k, nil, withKeys(k, map[string]st.AttributeValue{"title": title})),
			want: crdt.Change{Collection: "todos", Record: crdt.DeleteRecord("a#1", stamp)},
		},
		{
			// D5: cvg marks Convergo's own items only by their '~' keys; on a
			// foreign item it is a field like any other.
			name: "an attribute named cvg is a field",
			rec:  streamRecord(st.OperationTypeInsert, seq, k, withKeys(k, map[string]st.AttributeValue{attrCvg: &st.AttributeValueMemberN{Value: "1"}}), nil),
			want: crdt.Change{Collection: "todos", Record: crdt.SetField("a#1", attrCvg, mustCBOR(t, &st.AttributeValueMemberN{Value: "1"}), stamp)},
		},
		{name: "own record item", ignore: true, rec: streamRecord(st.OperationTypeInsert, seq, fkeys(recordPK("todos", "1"), "0"), withKeys(fkeys(recordPK("todos", "1"), "0"), nil), nil)},
		{name: "own head item", ignore: true, rec: streamRecord(st.OperationTypeModify, seq, fkeys(headPK("todos"), "0"), nil, nil)},
		{name: "own log item", ignore: true, rec: streamRecord(st.OperationTypeInsert, seq, fkeys(logPK("todos"), "7"), nil, nil)},
		{name: "own ledger item", ignore: true, rec: streamRecord(st.OperationTypeInsert, seq, fkeys(capturePK("todos", "1"), "0"), withKeys(fkeys(capturePK("todos", "1"), "0"), nil), nil)},
		{name: "other sort key", ignore: true, rec: streamRecord(st.OperationTypeInsert, seq, fkeys("todos#1", "1"), withKeys(fkeys("todos#1", "1"), nil), nil)},
		{name: "no separator", ignore: true, rec: streamRecord(st.OperationTypeInsert, seq, fkeys("todos", "0"), withKeys(fkeys("todos", "0"), nil), nil)},
		{name: "invalid collection", ignore: true, rec: streamRecord(st.OperationTypeInsert, seq, fkeys("to dos#1", "0"), withKeys(fkeys("to dos#1", "0"), nil), nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := foreignChange(tc.rec, stamp)
			if err != nil {
				t.Fatalf("readForeign: %v", err)
			}
			if ok == tc.ignore {
				t.Fatalf("ok = %v, want %v", ok, !tc.ignore)
			}
			if ok && (got.Collection != tc.want.Collection || !got.Record.Equal(tc.want.Record)) {
				t.Fatalf("got %s %+v, want %s %+v", got.Collection, got.Record, tc.want.Collection, tc.want.Record)
			}
		})
	}
}

func TestForeignChangeRefusesWhole(t *testing.T) {
	k := fkeys("todos#1", "0")
	stamp := crdt.Stamp{Wall: 1, Replica: "r"}
	for name, img := range map[string]map[string]st.AttributeValue{
		"control character in name": {"bad\nname": &st.AttributeValueMemberS{Value: "x"}, "ok": &st.AttributeValueMemberS{Value: "y"}},
		"unmappable number":         {"n": &st.AttributeValueMemberN{Value: "1e999"}, "ok": &st.AttributeValueMemberS{Value: "y"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, ok, err := foreignChange(streamRecord(st.OperationTypeInsert, "1", k, withKeys(k, img), nil), stamp)
			if err == nil || ok {
				t.Fatalf("ok = %v, err = %v; want the record refused whole", ok, err)
			}
		})
	}
	// A MODIFY without its old image (a NEW_IMAGE stream) cannot tell what
	// changed: refused rather than every attribute written.
	rec := streamRecord(st.OperationTypeModify, "1", k, withKeys(k, map[string]st.AttributeValue{"a": &st.AttributeValueMemberS{Value: "x"}}), nil)
	if _, ok, err := foreignChange(rec, stamp); err == nil || ok {
		t.Fatalf("modify without old image: ok = %v, err = %v; want a refusal", ok, err)
	}
	// An invalid attribute the write did not touch does not block it.
	old := withKeys(k, map[string]st.AttributeValue{"bad\nname": &st.AttributeValueMemberS{Value: "x"}})
	nw := withKeys(k, map[string]st.AttributeValue{"bad\nname": &st.AttributeValueMemberS{Value: "x"}, "ok": &st.AttributeValueMemberS{Value: "y"}})
	got, ok, err := foreignChange(streamRecord(st.OperationTypeModify, "1", k, nw, old), stamp)
	if err != nil || !ok || len(got.Record.Fields) != 1 {
		t.Fatalf("modify beside an untouched invalid attribute: %+v, %v, %v; want the ok field alone", got.Record, ok, err)
	}
}

func mustCBOR(t *testing.T, av st.AttributeValue) []byte {
	t.Helper()
	b, err := attributeCBOR(av)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHeadOf(t *testing.T) {
	img := withKeys(fkeys(headPK("todos"), "0"), map[string]st.AttributeValue{attrHead: &st.AttributeValueMemberN{Value: "17"}})
	ref, head, ok := headOf(streamRecord(st.OperationTypeModify, "1", fkeys(headPK("todos"), "0"), img, nil))
	if !ok || ref != (logRef{coll: "todos", shards: 1}) || head != 17 {
		t.Fatalf("headOf = %v, %d, %v; want todos, 17, true", ref, head, ok)
	}
	// A shard's head names its shard count; the marker head (0) is none.
	shard := logRef{coll: "todos", shard: 3, shards: 4}
	img = withKeys(fkeys(shard.headPK(), "0"), map[string]st.AttributeValue{attrHead: &st.AttributeValueMemberN{Value: "5"}, attrK: &st.AttributeValueMemberN{Value: "4"}})
	if ref, head, ok := headOf(streamRecord(st.OperationTypeModify, "2", fkeys(shard.headPK(), "0"), img, nil)); !ok || ref != shard || head != 5 {
		t.Fatalf("headOf(shard head) = %v, %d, %v; want %v, 5, true", ref, head, ok, shard)
	}
	img = withKeys(fkeys(headPK("todos"), "0"), map[string]st.AttributeValue{attrHead: &st.AttributeValueMemberN{Value: "0"}, attrK: &st.AttributeValueMemberN{Value: "4"}})
	if _, _, ok := headOf(streamRecord(st.OperationTypeInsert, "3", fkeys(headPK("todos"), "0"), img, nil)); ok {
		t.Fatal("the marker head of a sharded collection read as a head")
	}
	if _, _, ok := headOf(streamRecord(st.OperationTypeInsert, "1", fkeys("todos#1", "0"), img, nil)); ok {
		t.Fatal("a foreign item read as a head")
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Options
		err  bool
	}{
		{in: "dynamodb://convergo", want: Options{Table: "convergo", Capture: true}},
		{in: "dynamodb://t1?region=eu-west-1&endpoint=http://127.0.0.1:8765&create=1&capture=0&poll=200ms",
			want: Options{Table: "t1", Region: "eu-west-1", Endpoint: "http://127.0.0.1:8765", CreateTable: true, PollInterval: 200 * time.Millisecond}},
		{in: "dynamodb://t?shards=4,todos:16,notes:1&capture=0", want: Options{Table: "t", DefaultShards: 4, Shards: map[string]int{"todos": 16, "notes": 1}}},
		{in: "dynamodb://t?turn=50ms&capture=0", want: Options{Table: "t", CommitTurn: 50 * time.Millisecond}},
		{in: "dynamodb://t?turn=off&capture=0", want: Options{Table: "t", CommitTurn: -1}},
		{in: "dynamodb://t?turn=0s", err: true},
		{in: "dynamodb://t?turn=soon", err: true},
		{in: "dynamodb://t?shards=17", err: true},
		{in: "dynamodb://t?shards=0", err: true},
		{in: "dynamodb://t?shards=~x:2", err: true},
		{in: "redis://x", err: true},
		{in: "dynamodb://", err: true},
		{in: "dynamodb://t/extra", err: true},
		{in: "dynamodb://t?create=maybe", err: true},
		{in: "dynamodb://t?poll=-1s", err: true},
		{in: "dynamodb://t?regoin=x", err: true},
	} {
		got, err := ParseURL(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseURL(%q): error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestFirstChunk(t *testing.T) {
	var changes []crdt.Change
	var idxs []int
	for i := range 100 {
		changes = append(changes, crdt.Change{Collection: "c", Record: crdt.Record{ID: fmt.Sprintf("r%d", i%60)}})
		idxs = append(idxs, i)
	}
	chunk := firstChunk(changes, idxs)
	if len(chunk) != recordsPerTx {
		t.Fatalf("first chunk of 100 changes to 60 records: %d changes, want %d", len(chunk), recordsPerTx)
	}
	if 1+2*recordsPerTx > maxTxActions {
		t.Fatalf("%d new records need %d actions, more than %d", recordsPerTx, 1+2*recordsPerTx, maxTxActions)
	}
	// Repeated records do not count twice.
	same := []crdt.Change{{Record: crdt.Record{ID: "x"}}, {Record: crdt.Record{ID: "x"}}}
	if got := firstChunk(same, []int{0, 1}); len(got) != 2 {
		t.Fatalf("two changes to one record split into %d", len(got))
	}
}

// TestPlanLimits checks that makePlan refuses merged records past the limits
// with ErrTooLarge and that one transaction stays within DynamoDB's.
func TestPlanLimits(t *testing.T) {
	s := &Store{table: "t"}
	big := make([]byte, 100<<10)
	val := func(fill byte) []byte {
		for i := range big {
			big[i] = fill
		}
		v, err := crdt.EncodeValue(big)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var changes []crdt.Change
	var idxs []int
	for i := range recordsPerTx {
		changes = append(changes, crdt.Change{Collection: "c", Record: crdt.SetField(string(rune('a'+i)), "f", val(byte(i)), crdt.Stamp{Wall: 1, Replica: "r"})})
		idxs = append(idxs, i)
	}
	p, err := s.makePlan(logRef{coll: "c", shards: 1}, groupState{recs: map[string]stores.Entry{}}, changes, idxs, 1)
	if err != nil {
		t.Fatal(err)
	}
	if p.done == len(idxs) || p.done == 0 {
		t.Fatalf("plan of %d 100 KB records took %d; want it cut below 4 MB", len(idxs), p.done)
	}
	size := 0
	for _, it := range p.items {
		if it.Put != nil {
			size += itemSize(it.Put.Item)
		}
	}
	if size > maxTxBytes || len(p.items) > maxTxActions {
		t.Fatalf("transaction of %d bytes and %d actions", size, len(p.items))
	}
	if p.head != uint64(p.done) || p.results[p.done-1].Seq != p.head {
		t.Fatalf("plan head %d after %d changes", p.head, p.done)
	}

	// Actions: 49 new records fit one transaction, 33 updated ones.
	small := func(existing bool) plan {
		state := groupState{head: 100, recs: map[string]stores.Entry{}}
		var changes []crdt.Change
		var idxs []int
		for i := range recordsPerTx {
			id := fmt.Sprintf("r%d", i)
			if existing {
				state.recs[id] = stores.Entry{Seq: uint64(i + 1), Record: crdt.SetField(id, "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "r"})}
			}
			changes = append(changes, crdt.Change{Collection: "c", Record: crdt.SetField(id, "g", []byte{0x01}, crdt.Stamp{Wall: 2, Replica: "r"})})
			idxs = append(idxs, i)
		}
		p, err := s.makePlan(logRef{coll: "c", shards: 1}, state, changes, idxs, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.items) > maxTxActions {
			t.Fatalf("transaction of %d actions", len(p.items))
		}
		return p
	}
	if p := small(false); p.done != recordsPerTx || len(p.items) != 1+2*recordsPerTx {
		t.Fatalf("new records: plan took %d changes in %d actions, want %d in %d", p.done, len(p.items), recordsPerTx, 1+2*recordsPerTx)
	}
	if p := small(true); p.done != 33 || len(p.items) != 100 || p.head != 133 {
		t.Fatalf("updated records: plan took %d changes in %d actions up to head %d, want 33 in 100 up to 133", p.done, len(p.items), p.head)
	}

	// Three 100 KB fields make a 300 KB record: one more is refused.
	r := crdt.Record{ID: "x", Fields: map[string]crdt.Field{}}
	for i := range 3 {
		r.Fields[string(rune('a'+i))] = crdt.Field{Stamp: crdt.Stamp{Wall: 1, Replica: "r"}, Value: val('z')}
	}
	_, err = s.makePlan(logRef{coll: "c", shards: 1}, groupState{recs: map[string]stores.Entry{}}, []crdt.Change{{Collection: "c", Record: r}}, []int{0}, 1)
	if !errors.Is(err, stores.ErrTooLarge) {
		t.Fatalf("record past MaxRecordBytes: got %v, want ErrTooLarge", err)
	}
}

// TestItemSize checks the size estimate against DynamoDB's rules.
func TestItemSize(t *testing.T) {
	item := map[string]dt.AttributeValue{"pk": s("abc"), "rec": b(make([]byte, 10)), "seq": n(5)}
	if got, want := itemSize(item), 2+3+3+10+3+21; got != want {
		t.Fatalf("itemSize = %d, want %d", got, want)
	}
}

// TestPlanToken checks that a transaction retried after an unknown outcome
// keeps its client request token, and that a new round or another store
// instance gets another.
func TestPlanToken(t *testing.T) {
	s1, s2 := &Store{table: "t", nonce: [12]byte{1}}, &Store{table: "t", nonce: [12]byte{2}}
	changes := []crdt.Change{{Collection: "c", Record: crdt.SetField("a", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "r"})}}
	state := groupState{head: 7, recs: map[string]stores.Entry{}}
	token := func(s *Store, round int) string {
		p, err := s.makePlan(logRef{coll: "c", shards: 1}, state, changes, []int{0}, round)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.token) == 0 || len(p.token) > 36 {
			t.Fatalf("token %q: want 1 to 36 characters", p.token)
		}
		return p.token
	}
	if token(s1, 1) != token(s1, 1) {
		t.Fatal("one transaction got two tokens")
	}
	if token(s1, 1) == token(s1, 2) {
		t.Fatal("a new round reused the token")
	}
	if token(s1, 1) == token(s2, 1) {
		t.Fatal("two store instances share a token")
	}
}

// TestPlanTornRead checks a group whose records were read after a writer
// moved the head past the value read for it: the plan's new seqs must stay
// above every record's old seq, or one transaction would put and delete the
// same log item.
func TestPlanTornRead(t *testing.T) {
	s := &Store{table: "t"}
	st := crdt.Stamp{Wall: 5, Replica: "r"}
	state := groupState{head: 10, recs: map[string]stores.Entry{
		"b": {Seq: 12, Record: crdt.SetField("b", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "r"})},
	}}
	changes := []crdt.Change{
		{Collection: "c", Record: crdt.SetField("a", "f", []byte{0x02}, st)},
		{Collection: "c", Record: crdt.SetField("b", "f", []byte{0x02}, st)},
	}
	p, err := s.makePlan(logRef{coll: "c", shards: 1}, state, changes, []int{0, 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	type logKey struct{ pk, sk string }
	seen := map[logKey]bool{}
	for _, it := range p.items {
		var k map[string]dt.AttributeValue
		switch {
		case it.Put != nil:
			k = it.Put.Item
		case it.Delete != nil:
			k = it.Delete.Key
		}
		lk := logKey{k[attrPK].(*dt.AttributeValueMemberS).Value, k[attrSK].(*dt.AttributeValueMemberN).Value}
		if seen[lk] {
			t.Fatalf("transaction touches %v twice", lk)
		}
		seen[lk] = true
	}
	if p.results[0].Seq != 13 || p.results[1].Seq != 14 {
		t.Fatalf("seqs %d, %d; want 13, 14 (above the record read at 12)", p.results[0].Seq, p.results[1].Seq)
	}
}

package fuzz

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz from crdt/testdata/vectors.json and the hand-made inputs")

// TestSeedCorpus keeps the checked-in seed corpus in step with the golden
// vectors and the hand-made hostile inputs below. Regenerate with
//
//	go test ./fuzz -run '^TestSeedCorpus$' -update
func TestSeedCorpus(t *testing.T) {
	corpus := seedCorpus(t)
	for target, entries := range corpus {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, args := range entries {
			path := filepath.Join(dir, name)
			want := corpusFile(args...)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (run with -update): %v", path, err)
			}
		}
	}
}

// corpusFile formats one corpus entry as `go test -fuzz` reads it.
func corpusFile(args ...[]byte) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		fmt.Fprintf(&b, "[]byte(%q)\n", a)
	}
	return []byte(b.String())
}

type vectors struct {
	Values []struct {
		Name string `json:"name"`
		Hex  string `json:"hex"`
	} `json:"values"`
	Records []struct {
		Name string `json:"name"`
		Hex  string `json:"hex"`
	} `json:"records"`
	Merges []struct {
		Name    string `json:"name"`
		AHex    string `json:"a_hex"`
		BHex    string `json:"b_hex"`
		WantHex string `json:"want_hex"`
	} `json:"merges"`
	Invalid []struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
		Hex  string `json:"hex"`
	} `json:"invalid"`
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

func slug(parts ...string) string {
	return strings.Trim(nonName.ReplaceAllString(strings.ToLower(strings.Join(parts, "-")), "-"), "-")
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("vector hex %q: %v", s, err)
	}
	return b
}

// seedCorpus returns target → entry name → arguments.
func seedCorpus(t *testing.T) map[string]map[string][][]byte {
	raw, err := os.ReadFile(filepath.Join("..", "crdt", "testdata", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	c := map[string]map[string][][]byte{
		"FuzzDecodeRecord":   {},
		"FuzzDecodeChanges":  {},
		"FuzzDecodeValue":    {},
		"FuzzCanonicalValue": {},
		"FuzzMergeLaws":      {},
		"FuzzDecodeCompact":  {},
	}
	add := func(target, name string, args ...[]byte) { c[target][slug(name)] = args }
	addValue := func(name string, b []byte) {
		add("FuzzDecodeValue", name, b)
		add("FuzzCanonicalValue", name, b)
	}
	var records [][]byte
	addRecord := func(name string, b []byte) {
		add("FuzzDecodeRecord", name, b)
		records = append(records, b)
		// The same record as a one-change batch.
		add("FuzzDecodeChanges", name, append([]byte{0x81, 0xa2, 0x01, 0x64, 't', 'o', 'd', 'o', 0x02}, b...))
	}

	for _, x := range v.Values {
		addValue("vector "+x.Name, unhex(t, x.Hex))
	}
	for _, x := range v.Records {
		b := unhex(t, x.Hex)
		addRecord("vector "+x.Name, b)
		for n := 1; n < len(b); n += max(1, len(b)/6) {
			add("FuzzDecodeRecord", fmt.Sprintf("truncated %s at %d", x.Name, n), b[:n])
		}
	}
	for _, x := range v.Merges {
		a, b := unhex(t, x.AHex), unhex(t, x.BHex)
		add("FuzzMergeLaws", "vector "+x.Name, a, b, unhex(t, x.WantHex))
		add("FuzzDecodeRecord", "merge "+x.Name+" a", a)
		add("FuzzDecodeRecord", "merge "+x.Name+" b", b)
	}
	for _, x := range v.Invalid {
		b := unhex(t, x.Hex)
		switch x.Kind {
		case "record":
			add("FuzzDecodeRecord", "invalid "+x.Name, b)
		case "changes":
			add("FuzzDecodeChanges", "invalid "+x.Name, b)
		case "value":
			addValue("invalid "+x.Name, b)
		}
	}

	// Messages with compact stamps, in both forms, and the ones refused.
	raw, err = os.ReadFile(filepath.Join("..", "crdt", "testdata", "compact.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cv struct {
		Messages []struct {
			Name       string `json:"name"`
			PlainHex   string `json:"plain_hex"`
			CompactHex string `json:"compact_hex"`
		} `json:"messages"`
		Invalid []struct {
			Name string `json:"name"`
			Hex  string `json:"hex"`
		} `json:"invalid"`
	}
	if err := json.Unmarshal(raw, &cv); err != nil {
		t.Fatal(err)
	}
	for _, x := range cv.Messages {
		if x.PlainHex != "" { // a live push has no plain form
			add("FuzzDecodeCompact", "plain "+x.Name, unhex(t, x.PlainHex))
		}
		add("FuzzDecodeCompact", "compact "+x.Name, unhex(t, x.CompactHex))
	}
	for _, x := range cv.Invalid {
		add("FuzzDecodeCompact", "invalid "+x.Name, unhex(t, x.Hex))
	}

	// Hand-made hostile inputs.
	deep := func(n int, inner []byte) []byte { return append(bytes.Repeat([]byte{0x81}, n), inner...) }
	nasty := map[string][]byte{
		"empty":                     {},
		"map claiming 2^64-1 pairs": {0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"array claiming 2^63 items": {0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0},
		"text claiming 2^63 bytes":  {0x7b, 0x80, 0, 0, 0, 0, 0, 0, 0, 'a'},
		"bytes claiming 4 GiB":      {0x5a, 0xff, 0xff, 0xff, 0xff, 1},
		"deep nesting 1000":         deep(1000, []byte{0}),
		"nesting at value limit":    deep(crdt.MaxValueNestedLevels, []byte{0}),
		"nesting over value limit":  deep(crdt.MaxValueNestedLevels+1, []byte{0}),
		"nesting at decode limit":   deep(crdt.MaxNestedLevels, []byte{0}),
		"tag 0 date":                append([]byte{0xc0, 0x74}, "2020-01-01T00:00:00Z"...),
		"tag 2 bignum":              {0xc2, 0x41, 0x01},
		"self-describe tag":         {0xd9, 0xd9, 0xf7, 0x00},
		"indefinite array":          {0x9f, 0x01, 0x02, 0xff},
		"indefinite map":            {0xbf, 0x61, 'a', 0x01, 0xff},
		"indefinite text":           {0x7f, 0x61, 'a', 0xff},
		"break alone":               {0xff},
		"dup keys value map":        {0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02},
		"unsorted value map":        {0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x02},
		"non-shortest int":          {0x18, 0x05},
		"non-shortest length":       {0x78, 0x01, 'a'},
		"float64 that fits float16": {0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0},
		"float32 that fits float16": {0xfa, 0x3f, 0x80, 0, 0},
		"signalling NaN f16":        {0xf9, 0x7c, 0x01},
		"NaN as float64":            {0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0},
		"negative zero f16":         {0xf9, 0x80, 0x00},
		"undefined":                 {0xf7},
		"simple 0":                  {0xe0},
		"simple 255":                {0xf8, 0xff},
		"simple 24 reserved":        {0xf8, 0x18},
		"reserved info 28":          {0x1c},
		"invalid utf8 text":         {0x62, 0xc3, 0x28},
		"overlong utf8 text":        {0x62, 0xc0, 0xaf},
		"two items":                 {0x01, 0x02},
		"max negint":                {0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"map with array key":        {0xa1, 0x81, 0x01, 0x02},
		"map with map key":          {0xa1, 0xa0, 0x02},
		"value too large":           append([]byte{0x5a, 0x00, 0x02, 0x00, 0x01}, bytes.Repeat([]byte("a"), crdt.MaxValueBytes+1)...),
		"value at limit":            append([]byte{0x5a, 0x00, 0x01, 0xff, 0xfb}, bytes.Repeat([]byte("a"), crdt.MaxValueBytes-5)...),
	}
	for name, b := range nasty {
		addValue(name, b)
		if len(b) > 1024 {
			continue // the large values only matter as values; keep the corpus small
		}
		add("FuzzDecodeRecord", name, b)
		add("FuzzDecodeChanges", name, b)
	}

	// Records built by hand around the edges of the model.
	stamp := func(w, l uint64, r string) []byte {
		b := []byte{0x83}
		b = crdtUint(b, w)
		b = crdtUint(b, l)
		return append(append(b, byte(0x60+len(r))), r...)
	}
	field := func(w, l uint64, r string, value []byte) []byte {
		b := stamp(w, l, r)
		if value == nil {
			return b
		}
		b[0] = 0x84
		return append(b, value...)
	}
	rec := func(id string, deleted []byte, fields ...[]byte) []byte { // fields: name, field, name, field...
		n := byte(1)
		if deleted != nil {
			n++
		}
		if len(fields) > 0 {
			n++
		}
		b := append([]byte{0xa0 | n, 0x01, byte(0x60 + len(id))}, id...)
		if deleted != nil {
			b = append(append(b, 0x02), deleted...)
		}
		if len(fields) > 0 {
			b = append(b, 0x03, byte(0xa0|len(fields)/2))
			for i := 0; i < len(fields); i += 2 {
				b = append(append(b, byte(0x60+len(fields[i]))), fields[i]...)
				b = append(b, fields[i+1]...)
			}
		}
		return b
	}
	hand := map[string][]byte{
		"deleted hides older field": rec("r", stamp(10, 0, "a"), []byte("x"), field(9, 0, "b", []byte{0x01}), []byte("y"), field(11, 0, "b", []byte{0x02})),
		"delete equal to field":     rec("r", stamp(10, 0, "a"), []byte("x"), field(10, 0, "a", []byte{0x01})),
		"unset and set":             rec("r", nil, []byte("x"), field(5, 1, "a", nil), []byte("y"), field(5, 1, "b", []byte{0xf6})),
		"dup field names":           rec("r", nil, []byte("x"), field(1, 0, "a", []byte{0x01}), []byte("x"), field(2, 0, "a", []byte{0x02})),
		"unsorted field names":      rec("r", nil, []byte("yy"), field(1, 0, "a", []byte{0x01}), []byte("x"), field(2, 0, "a", []byte{0x02})),
		"max wall and logical":      rec("r", nil, []byte("x"), field(1<<53-1, 1<<32-1, "a", []byte{0x01})),
		"wall 2^53":                 rec("r", nil, []byte("x"), field(1<<53, 0, "a", []byte{0x01})),
		"logical 2^32":              rec("r", nil, []byte("x"), field(1, 1<<32, "a", []byte{0x01})),
		"zero stamp field":          rec("r", nil, []byte("x"), field(0, 0, "", []byte{0x01})),
		"zero delete stamp":         rec("r", stamp(0, 0, "")),
		"empty replica":             rec("r", nil, []byte("x"), field(1, 0, "", []byte{0x01})),
		"replica with brace":        rec("r", nil, []byte("x"), field(1, 0, "{a}", []byte{0x01})),
		"field value tagged":        rec("r", nil, []byte("x"), field(1, 0, "a", []byte{0xc1, 0x01})),
		"field value deep":          rec("r", nil, []byte("x"), field(1, 0, "a", deep(30, []byte{0}))),
		"field with 5 items":        rec("r", nil, []byte("x"), append(append([]byte{0x85}, field(1, 0, "a", []byte{0x01})[1:]...), 0x01)),
		"record key 4":              {0xa2, 0x01, 0x61, 'r', 0x04, 0x00},
		"record id int":             {0xa1, 0x01, 0x01},
		"record dup id":             {0xa2, 0x01, 0x61, 'r', 0x01, 0x61, 's'},
		"record map as array":       {0x81, 0x61, 'r'},
		"field name control char":   rec("r", nil, []byte("\x01"), field(1, 0, "a", []byte{0x01})),
		"record trailing byte":      append(rec("r", nil), 0x00),
	}
	for _, name := range slices.Sorted(maps.Keys(hand)) {
		addRecord(name, hand[name])
	}
	// Merge-law seeds: hand-made records against each other.
	add("FuzzMergeLaws", "delete vs later field", hand["deleted hides older field"], hand["delete equal to field"], hand["unset and set"])
	add("FuzzMergeLaws", "equal stamps different values",
		rec("r", nil, []byte("x"), field(1, 0, "a", []byte{0x01})),
		rec("r", nil, []byte("x"), field(1, 0, "a", []byte{0x02})),
		rec("r", nil, []byte("x"), field(1, 0, "a", nil)))
	add("FuzzMergeLaws", "unnormalized input", hand["deleted hides older field"], rec("r", nil, []byte("x"), field(8, 0, "c", []byte{0x03})), nil)
	for i := 0; i+2 < len(records); i += 3 {
		add("FuzzMergeLaws", fmt.Sprintf("records %d", i), records[i], records[i+1], records[i+2])
	}
	return c
}

// crdtUint appends a CBOR unsigned integer head in shortest form, as the
// hand-made records above need. (crdt's own encoder is not exported.)
func crdtUint(b []byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, byte(n))
	case n < 1<<8:
		return append(b, 0x18, byte(n))
	case n < 1<<16:
		return append(b, 0x19, byte(n>>8), byte(n))
	case n < 1<<32:
		return append(b, 0x1a, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, 0x1b, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

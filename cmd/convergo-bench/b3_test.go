package main

import "testing"

// The Go core's B3 update bytes are the JS client's, byte for byte: the
// live push message from a session opened 1 s and 3 h before the writes,
// and the HTTP push body (the figures of node scripts/bench/js/b3-bytes.mjs
// in docs/benchmarks.md, "Update bytes since the client pushes over its
// live session"; both encoders follow the rule the vectors pin).
func TestB3UpdateBytesAreTheJSClients(t *testing.T) {
	want := map[string]b3Sizes{
		"B3.1": {recent: 52_080, hours: 55_160, http: 89_040},
		"B3.2": {recent: 83_590, hours: 86_670, http: 120_550},
		"B3.3": {recent: 7_829_360, hours: 7_832_440, http: 7_866_320},
		"B3.x": {recent: 36_610, hours: 38_610, http: 60_610},
	}
	for _, sc := range b3Scenarios() {
		_, _, got, err := b3Updates(sc)
		if err != nil {
			t.Fatal(err)
		}
		if got != want[sc.id] {
			t.Errorf("%s: got %+v, want %+v", sc.id, got, want[sc.id])
		}
	}
}

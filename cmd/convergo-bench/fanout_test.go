package main

import "testing"

// fanfloor's default frame is the fan-out scenario's, measured: one
// write's changes frame as a subscriber receives it, the same at every
// measurement (its size does not hang on the time or the ids drawn), a
// byte larger from write 10 on (record id "w10").
func TestFanoutFrame(t *testing.T) {
	first, err := fanoutFrame(t.Context(), 9)
	if err != nil {
		t.Fatal(err)
	}
	if first < 8 {
		t.Fatalf("got a frame of %d bytes, want at least fanfloor's 8", first)
	}
	again, err := fanoutFrame(t.Context(), 9)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatalf("measured %d bytes, then %d", first, again)
	}
	if tenth, err := fanoutFrame(t.Context(), 10); err != nil || tenth != first+1 {
		t.Fatalf("write 10: %d bytes (%v), want %d", tenth, err, first+1)
	}
	t.Logf("the fan-out scenario's frame: %d bytes", first)
}

func TestWSHeaderBytes(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}} {
		if got := wsHeaderBytes(tc.n); got != tc.want {
			t.Errorf("payload of %d: got %d, want %d", tc.n, got, tc.want)
		}
	}
}

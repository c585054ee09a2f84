package proto

import (
	"math"
	"strings"
	"testing"
)

func TestPushRoom(t *testing.T) {
	for _, tc := range []struct{ maxBody, want int64 }{
		{0, 0},
		{PushEnvelopeBytes - 1, 0},
		{PushEnvelopeBytes, 0},
		{PushEnvelopeBytes + 1, 1},
		{DefaultMaxBodyBytes, DefaultMaxBodyBytes - PushEnvelopeBytes},
	} {
		if got := PushRoom(tc.maxBody); got != tc.want {
			t.Errorf("PushRoom(%d) = %d, want %d", tc.maxBody, got, tc.want)
		}
	}
}

// TestRestoreEnvelopeWithinPushEnvelope: PushRoom holds for restores too
// because a restore's envelope, with the longest collection name and the
// largest version, fits in PushEnvelopeBytes, with the heads of a full
// record list.
func TestRestoreEnvelopeWithinPushEnvelope(t *testing.T) {
	req := RestoreRequest{Collection: strings.Repeat("c", MaxCollectionBytes), Records: []SealedRecord{}, Version: math.MaxUint64}
	b, err := Encode(req)
	if err != nil {
		t.Fatal(err)
	}
	// The empty list's head (1 byte) grows to at most 9 for a full one.
	if n := len(b) - 1 + 9; n > PushEnvelopeBytes {
		t.Errorf("a restore's envelope takes %d bytes, over PushEnvelopeBytes (%d)", n, PushEnvelopeBytes)
	}
}

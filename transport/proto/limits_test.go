package proto

import "testing"

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

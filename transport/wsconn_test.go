package transport

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// TestCloseFrameFitsAControlFrame: a close frame's reason is cut to fit
// the 125-byte control payload with its status, at a character boundary,
// so the reason a client reads stays UTF-8 (a broken one fails the
// connection in browsers).
func TestCloseFrameFitsAControlFrame(t *testing.T) {
	for name, tc := range map[string]struct{ reason, want string }{
		"short":             {"bye", "bye"},
		"exactly 123 bytes": {strings.Repeat("a", 123), strings.Repeat("a", 123)},
		"ascii, too long":   {strings.Repeat("a", 200), strings.Repeat("a", 123)},
		// 122 ASCII bytes, then a 2-byte character across byte 123.
		"cut inside a character": {strings.Repeat("a", 122) + "é" + "tail", strings.Repeat("a", 122)},
		// 3-byte characters: 41 of them fill 123 bytes exactly.
		"three-byte characters": {strings.Repeat("€", 60), strings.Repeat("€", 41)},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := ws.ReadFrame(bytes.NewReader(closeFrame(ws.StatusPolicyViolation, tc.reason)))
			if err != nil {
				t.Fatal(err)
			}
			if f.Header.OpCode != ws.OpClose || !f.Header.Fin || len(f.Payload) > ws.MaxControlFramePayloadSize {
				t.Fatalf("header %+v, payload %d bytes: not a close control frame", f.Header, len(f.Payload))
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if code != ws.StatusPolicyViolation || reason != tc.want || !utf8.ValidString(reason) {
				t.Fatalf("close %d %q, want %d %q (valid UTF-8)", code, reason, ws.StatusPolicyViolation, tc.want)
			}
		})
	}
}

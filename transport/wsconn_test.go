package transport

import (
	"bufio"
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

// A frame's payload is held as it arrives, not as its header announces:
// a client that announces megabytes and sends a few bytes (then stalls
// until WriteTimeout, on as many connections as it may open) makes the
// server hold what it sent, plus at most readChunk, not the megabytes.
func TestReadPayloadGrowsAsBytesArrive(t *testing.T) {
	for _, tc := range []struct {
		name     string
		announce int
		sent     int
	}{
		{"4 MiB announced, 100 bytes sent", 4 << 20, 100},
		{"4 MiB announced, 1 MiB sent", 4 << 20, 1 << 20},
		{"4 MiB announced and sent", 4 << 20, 4 << 20},
		{"10 bytes", 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := bytes.Repeat([]byte{7}, tc.sent)
			prefix := []byte("before")
			msg, err := readPayload(bufio.NewReader(bytes.NewReader(src)), bytes.Clone(prefix), tc.announce)
			if tc.sent < tc.announce {
				if err == nil {
					t.Fatal("a payload cut short: no error")
				}
			} else if err != nil || !bytes.Equal(msg, append(bytes.Clone(prefix), src...)) {
				t.Fatalf("read %d bytes, %v; want the prefix and the %d sent", len(msg), err, tc.sent)
			}
			// Twice what came, and a chunk, with the allocator's rounding
			// of a large slice up to whole 8 KiB pages.
			if bound := 2*(len(prefix)+tc.sent) + readChunk + 8<<10; cap(msg) > bound {
				t.Fatalf("holds %d bytes for %d sent of %d announced; want at most %d", cap(msg), tc.sent, tc.announce, bound)
			}
		})
	}
}

package redis

import "testing"

// FuzzMirrorValue feeds arbitrary bytes, as a client may push them into a
// mirrored collection, to mirrorValue: it must not panic.
func FuzzMirrorValue(f *testing.F) {
	f.Add([]byte{0x64, 'm', 'i', 'l', 'k'})
	f.Add([]byte{0xa2, 0xf6, 0x01, 0x61, 'a', 0x02})
	f.Add([]byte{0xa1, 0x01, 0x82, 0xf5, 0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { _ = mirrorValue(b) })
}

// Package bolttest holds what tests of the bolt store's users do to its
// file: the backups and restores that send a store back in time, as an
// operator does with a copy of the file (docs/operations.md), for the
// engine's reset tests and the clients' heal tests. It is the bolt
// counterpart of stores/redis/redistest.
package bolttest

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/convergo/convergo/stores/bolt"
)

// CopyFile copies the file at from to to, whole, replacing what to held:
// a backup of a store's file, or its restore over the live one. The store
// should be closed (or, for a backup taken live, idle) meanwhile. A new
// file is created readable by its owner only. Any failure ends the test.
func CopyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// CopyWithNote copies the store's file and the note the store keeps beside
// it (bolt.NotePath): a backup of the whole directory, or its restore, which
// the store cannot notice at open (a file put back alone, with CopyFile, it
// can). Where from has no note, to is left without one.
func CopyWithNote(t testing.TB, from, to string) {
	t.Helper()
	CopyFile(t, from, to)
	if _, err := os.Stat(bolt.NotePath(from)); errors.Is(err, fs.ErrNotExist) {
		if err := os.Remove(bolt.NotePath(to)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return
	}
	CopyFile(t, bolt.NotePath(from), bolt.NotePath(to))
}

package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/bolt"
)

// TestToolsRefuseAMissingBoltFile: the operator's commands work on the
// store a server serves; given a bolt path where no file is (a typo, or the
// default bolt:convergo.db run from another directory than the server's)
// they must say so and create nothing. They used to create a new empty
// store there and report success: deny printed "denied; every server on the
// store refuses it" while the server's own file never held the entry, and
// mark-restored marked a new file, not the restored one.
func TestToolsRefuseAMissingBoltFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "convergo.db")
	store := "bolt:" + path
	for _, args := range [][]string{
		{"deny", "--subject", "alice"},
		{"deny", "--list"},
		{"allow", "--subject", "alice"},
		{"store", "identity"},
		{"store", "mark-restored"},
		{"repair", "--collection", "todos"},
	} {
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, "--store", store), &out, &errOut)
		if err == nil {
			t.Errorf("%v on a missing file: no error; printed %q", args, out.String())
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%v: error %q does not name the file", args, err)
		}
		for _, p := range []string{path, bolt.NotePath(path)} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%v created %s (stat: %v)", args, p, err)
			}
		}
	}
}

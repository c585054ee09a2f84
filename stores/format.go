package stores

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNewerFormat means the store's format mark names a later format than
// this build reads: a newer Convergo wrote the store (a server rolled back
// after an upgrade). The data is not damaged, and this build must not read
// or write a layout it may not understand: run the build that wrote it (or
// a later one). It does not wrap ErrCorrupt. Each store marks its data with
// a Format when it first opens it and checks the mark on every open.
var ErrNewerFormat = errors.New("stores: written by a newer Convergo")

// Format is a store's data format: its mark is Name, a dash and Version
// ("convergo-bolt-1"). A change of a store's layout that an older build
// would misread raises Version.
type Format struct {
	Name    string
	Version int
}

// Mark is the format mark a store writes.
func (f Format) Mark() string { return f.Name + "-" + strconv.Itoa(f.Version) }

// Check checks the format mark a store read against f, the format this
// build writes. It returns nil for f's mark; an error wrapping
// ErrNewerFormat, naming both formats, for the mark of a later version of
// f; and for any other mark (an earlier version, another store's, one
// that is not a mark) an error wrapping corrupt, the store's own
// ErrCorrupt (or ErrCorrupt), naming both.
func (f Format) Check(mark string, corrupt error) error {
	want := f.Mark()
	if mark == want {
		return nil
	}
	if n, ok := strings.CutPrefix(mark, f.Name+"-"); ok {
		if v, err := strconv.Atoi(n); err == nil && v > f.Version && strconv.Itoa(v) == n {
			return fmt.Errorf("%w: format %q, this build reads %q: run the build that wrote it (or a later one)", ErrNewerFormat, mark, want)
		}
	}
	return fmt.Errorf("%w: format %q, want %q", corrupt, mark, want)
}

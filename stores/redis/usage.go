package redis

import (
	"context"
	_ "embed"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
)

// Usage is kept per collection in the hash <prefix>{<collection>}:usage
// (fields n, the records, and b, the bytes of their CBOR encodings), in the
// collection's slot: the merge script adds what each call changes, in the
// step that writes the records, and Repair sets it from the records it
// keeps. A collection written before the hash existed, or whose hash the
// merge script dropped as unsound, is counted once, by usage.lua, the
// first time it is read.

var _ stores.Usager = (*Store)(nil)

//go:embed usage.lua
var usageSource string

var usageScript = goredis.NewScript(withPrelude(usageSource, sizeSource))

// Usage implements stores.Usager: one script call, which reads the usage
// hash or, the first time, counts the collection (blocking Redis about as
// long as Repair does).
func (s *Store) Usage(ctx context.Context, collection string) (stores.Usage, error) {
	if err := s.begin(ctx); err != nil {
		return stores.Usage{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Usage{}, err
	}
	out, err := usageScript.Run(ctx, s.client, []string{s.recKey(collection), s.usageKey(collection)}).Int64Slice()
	if err != nil {
		return stores.Usage{}, s.fail(ctx, "usage of "+collection, err)
	}
	if len(out) != 2 || out[0] < 0 || out[1] < 0 {
		return stores.Usage{}, fmt.Errorf("usage of %s: usage script returned %v", collection, out)
	}
	return stores.Usage{Records: out[0], Bytes: out[1]}, nil
}

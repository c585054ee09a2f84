package redis

import (
	"context"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
)

// storeFormat is the format of the keys this build writes under a prefix.
// A change of their layout that an older build would misread raises its
// version, so that a server rolled back after the upgrade refuses the
// store (stores.ErrNewerFormat) rather than reading and writing it.
var storeFormat = stores.Format{Name: "convergo-redis", Version: 1}

// checkFormat marks a store that has no format mark with this build's
// format (a new store, or one from a build before the mark, whose layout
// is this one's) and checks the mark of one that has: a later format is
// refused with stores.ErrNewerFormat, any other mark or a key of the
// wrong type with stores.ErrCorrupt. One SET NX GET does both, so
// instances opening a new store together agree.
func (s *Store) checkFormat(ctx context.Context) error {
	key := s.formatKey()
	mark, err := s.client.SetArgs(ctx, key, storeFormat.Mark(), goredis.SetArgs{Mode: "NX", Get: true}).Result()
	switch {
	case errors.Is(err, goredis.Nil):
		s.log.Info("store marked with its format", "key", key, "format", storeFormat.Mark())
		return nil
	case goredis.HasErrorPrefix(err, "WRONGTYPE"):
		return fmt.Errorf("format mark %s: %w: the key is not a string", key, stores.ErrCorrupt)
	case err != nil:
		return s.fail(ctx, "format mark "+key, err)
	}
	if err := storeFormat.Check(mark, stores.ErrCorrupt); err != nil {
		return fmt.Errorf("format mark %s: %w", key, err)
	}
	return nil
}

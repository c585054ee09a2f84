package redis

import (
	"errors"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
)

// TestFormatMark: Open marks a store that has no format mark (one made by
// a build from before the mark, or a new one) with this build's format,
// in the key <prefix>{convergo}:format, the slot of the store's other
// global keys; and it refuses a store whose mark names a later format (a
// newer Convergo wrote it: a server rolled back after an upgrade) with
// stores.ErrNewerFormat naming both formats, rather than reading and
// writing a layout it may not understand. Any other mark, or a key of
// the wrong type, is refused as corrupt.
func TestFormatMark(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		openStore(t, tg, Options{KeyPrefix: prefix})
		formatKey := prefix + "{convergo}:format"
		raw := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: tg.addrs, IsClusterMode: tg.cluster})
		defer raw.Close()
		got, err := raw.Get(ctx, formatKey).Result()
		if err != nil || got != "convergo-redis-1" {
			t.Errorf("after Open of a store without a mark, %s holds %q (%v), want %q", formatKey, got, err, "convergo-redis-1")
		}
		for _, tc := range []struct {
			mark  string
			hash  bool  // the key is a hash, not a string
			want  error // nil, stores.ErrNewerFormat or stores.ErrCorrupt
			names string
		}{
			{mark: "convergo-redis-1"},
			{mark: "convergo-redis-2", want: stores.ErrNewerFormat, names: "convergo-redis-2"},
			{mark: "convergo-redis-17", want: stores.ErrNewerFormat, names: "convergo-redis-17"},
			{mark: "convergo-redis-0", want: stores.ErrCorrupt, names: "convergo-redis-0"},
			{mark: "convergo-bolt-1", want: stores.ErrCorrupt, names: "convergo-bolt-1"},
			{mark: "", want: stores.ErrCorrupt, names: `""`},
			{hash: true, want: stores.ErrCorrupt, names: formatKey},
		} {
			raw.Del(ctx, formatKey)
			if tc.hash {
				err = raw.HSet(ctx, formatKey, "f", "v").Err()
			} else {
				err = raw.Set(ctx, formatKey, tc.mark, 0).Err()
			}
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(ctx, tg.options(prefix))
			if err == nil {
				s.Close()
			}
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("Open of a store marked %q: %v", tc.mark, err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("Open of a store marked %q (hash %v): got %v, want %v", tc.mark, tc.hash, err, tc.want)
			case tc.want != nil && (errors.Is(err, stores.ErrNewerFormat) == errors.Is(err, stores.ErrCorrupt)):
				t.Errorf("Open of a store marked %q: got %v, want exactly one of newer and corrupt", tc.mark, err)
			case tc.want != nil && !strings.Contains(err.Error(), tc.names):
				t.Errorf("Open of a store marked %q: got %q, want it to name %s", tc.mark, err, tc.names)
			case tc.want == stores.ErrNewerFormat && !strings.Contains(err.Error(), "convergo-redis-1"):
				t.Errorf("Open of a store marked %q: got %q, want it to name this build's format", tc.mark, err)
			}
		}
	})
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/stores/storeurl"
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

// TestToolsCreateNoDynamoDBTable: the same of a DynamoDB table. The
// commands take the URL serve takes, which may carry create=1; given a
// table name where no table is, they used to create one and work on it.
func TestToolsCreateNoDynamoDBTable(t *testing.T) {
	ctx := context.Background()
	endpoint := storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
	table := "cmdtest-missing-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	url := "dynamodb://" + table + "?region=us-east-1&capture=0&endpoint=" + endpoint
	for _, args := range [][]string{
		{"deny", "--subject", "alice"},
		{"store", "identity"},
		{"store", "mark-restored"},
	} {
		var out, errOut bytes.Buffer
		if err := run(ctx, append(args, "--store", url+"&create=1"), &out, &errOut); err == nil {
			t.Errorf("%v on a missing table: no error; printed %q", args, out.String())
		}
		if st, err := storeurl.Open(ctx, url, storeurl.Options{}); err == nil {
			st.Close()
			t.Fatalf("%v created the table %s", args, table)
		}
	}
}

// TestToolsRefuseAnUnservedRedisPrefix: the same of a Redis URL whose
// prefix (or database) no server ever served: a store there has no
// identity yet. The commands used to make one and work on it, so a deny
// under a mistyped prefix reported success that no server saw.
func TestToolsRefuseAnUnservedRedisPrefix(t *testing.T) {
	ctx := context.Background()
	addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "convergotest:" + hex.EncodeToString(b) + ":"
	url := "redis://" + addr + "?prefix=" + prefix
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	for _, args := range [][]string{
		{"deny", "--subject", "alice"},
		{"deny", "--list"},
		{"store", "identity"},
		{"store", "mark-restored"},
		{"repair", "--collection", "todos"},
	} {
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, "--store", url), &out, &errOut)
		if err == nil {
			t.Errorf("%v on a prefix never served: no error; printed %q", args, out.String())
		}
		keys, kerr := c.Keys(ctx, prefix+"*").Result()
		if kerr != nil {
			t.Fatal(kerr)
		}
		for _, k := range keys {
			c.Del(ctx, k)
		}
		if len(keys) > 0 {
			t.Errorf("%v wrote %v", args, keys)
		}
	}
}

// TestToolsOnABoltFileAServerHolds: the README's scoped-sync example runs
// convergo deny while its server runs; on the embedded store the server
// holds the file, and the commands must say what to do (stop the server
// first), not only that the file is locked.
func TestToolsOnABoltFileAServerHolds(t *testing.T) {
	path := newBoltFile(t)
	held, err := bolt.Open(context.Background(), path, bolt.Options{}) // the server
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, args := range [][]string{
		{"deny", "--subject", "alice"},
		{"allow", "--subject", "alice"},
		{"store", "mark-restored"},
	} {
		// The wait for the lock is bounded by the context (bolt.Open).
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, "--store", "bolt:"+path), &out, &errOut)
		cancel()
		if err == nil {
			t.Fatalf("%v on a file a server holds: no error; printed %q", args, out.String())
		}
		if !strings.Contains(err.Error(), "stop the server") || !strings.Contains(err.Error(), path) {
			t.Errorf("%v on a file a server holds: %v; want it to name the file and say to stop the server", args, err)
		}
	}
}

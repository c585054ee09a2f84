package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storeurl"
)

// repairer is a store that can rebuild a collection's log and head from
// its records (the Redis and DynamoDB stores).
type repairer interface {
	Repair(ctx context.Context, collection string) (stores.RepairReport, error)
}

// repairFlags returns the flags of convergo repair, writing its usage to
// stderr, and where they are set: the store URL and the collection.
func repairFlags(stderr io.Writer) (fs *flag.FlagSet, raw, coll *string) {
	fs = flag.NewFlagSet("convergo repair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	raw = fs.String("store", "", "the store `URL`, as for serve (CONVERGO_STORE); required")
	coll = fs.String("collection", "", "the `collection` to rebuild; required")
	return fs, raw, coll
}

// repairCommand runs convergo repair --store URL --collection C: it
// rebuilds the collection's log and head from its records and starts a new
// epoch of it, so readers pull again (docs/redis.md, "Damaged data";
// docs/operations.md, "Backup and restore", for DynamoDB).
func repairCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, rawp, collp := repairFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	raw, coll := *rawp, *collp
	if raw == "" || coll == "" {
		fs.Usage()
		return errors.New("--store and --collection are required")
	}
	limit := 10 * time.Minute // a Redis repair is one script
	if spec, err := storeurl.Parse(raw); err == nil && spec.Kind == "dynamodb" {
		limit = rebuildLimit
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	st, kind, _, err := openForTool(ctx, raw, stderr, "", storeurl.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	r, ok := st.(repairer)
	if !ok {
		return fmt.Errorf("a %s store has nothing to repair: its writes are transactions that keep records, log and head together", kind)
	}
	rep, err := r.Repair(ctx, coll)
	if err != nil {
		return fmt.Errorf("repair %s: %w", coll, err)
	}
	_, err = fmt.Fprintf(stdout, "collection %s rebuilt: %d records, %d unreadable records dropped, head %d; readers start again (new epoch)\n", coll, rep.Records, rep.Lost, rep.Head)
	return err
}

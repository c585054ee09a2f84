package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/storeurl"
)

const storeUsage = `usage: convergo store <command> --store URL

commands:
  mark-restored   after restoring the store from a backup: start a new epoch
                  of every collection, so that every reader is reset;
                  DynamoDB: then rebuild every collection's log from its
                  records (a backup keeps no transaction's items together)
  identity        print the store's identity
  reshard         --collection C --shards K: rebuild a collection's log into
                  K log shards (DynamoDB); a new epoch, readers pull again

See docs/operations.md, "Backup and restore".
`

// rebuildLimit bounds a command that rebuilds DynamoDB logs (reshard,
// repair, mark-restored): a rebuild writes about four items per record.
const rebuildLimit = 24 * time.Hour

// allRepairer is a store whose restore leaves logs to rebuild from the
// records (DynamoDB: a backup keeps no transaction's items together):
// mark-restored rebuilds every collection's log after its new epoch.
type allRepairer interface {
	RepairAll(ctx context.Context, each func(coll string, rep stores.RepairReport)) error
}

// storeArgs are the flags of the store commands.
type storeArgs struct {
	raw, coll string
	shards    int
}

// storeFlags returns the flags of convergo store cmd, writing its usage
// to stderr.
func storeFlags(cmd string, stderr io.Writer) (*flag.FlagSet, *storeArgs) {
	var a storeArgs
	fs := flag.NewFlagSet("convergo store "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.raw, "store", "", "the store `URL`, as for serve (CONVERGO_STORE); required")
	if cmd == "reshard" {
		fs.StringVar(&a.coll, "collection", "", "the `collection` whose log to rebuild; required")
		fs.IntVar(&a.shards, "shards", 0, fmt.Sprintf("its new number of log shards, `K` (1..%d); required", stores.MaxShards))
	}
	return fs, &a
}

// storeCommand runs an operator command on a store.
func storeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, storeUsage)
		if len(args) == 0 {
			return errors.New("no store command")
		}
		return flag.ErrHelp
	}
	cmd := args[0]
	if cmd != "mark-restored" && cmd != "identity" && cmd != "reshard" {
		fmt.Fprint(stderr, storeUsage)
		return fmt.Errorf("unknown store command %q", cmd)
	}
	fs, a := storeFlags(cmd, stderr)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	raw, coll, shards := a.raw, a.coll, a.shards
	if raw == "" {
		return errors.New("--store (or CONVERGO_STORE) is required")
	}
	if cmd == "reshard" && (coll == "" || shards == 0) {
		return errors.New("reshard: --collection and --shards are required")
	}
	if cmd == "reshard" && stores.CheckShards(shards) != nil {
		return badFlag("shards", shards, fmt.Sprintf("must be in 1..%d", stores.MaxShards))
	}
	limit := time.Minute
	if cmd == "reshard" {
		limit = rebuildLimit
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// mark-restored expects a bolt file put back, or a DynamoDB table
	// restored: the store notices it at open (and starts the epoch this
	// command starts), which is then no error.
	st, _, _, err := openForTool(ctx, raw, stderr, "there is nothing to mark", storeurl.Options{Restoring: cmd == "mark-restored"})
	if err != nil {
		return err
	}
	defer st.Close()
	if cmd == "reshard" {
		r, ok := st.(interface {
			Reshard(ctx context.Context, coll string, k int) error
		})
		if !ok {
			return fmt.Errorf("reshard: the store %s has no sharded logs (only DynamoDB's have)", storeurl.Redact(raw))
		}
		if err := r.Reshard(ctx, coll, shards); err != nil {
			return fmt.Errorf("reshard %s of %s: %w", coll, storeurl.Redact(raw), err)
		}
		_, err = fmt.Fprintf(stdout, "collection %s: log rebuilt into %d shards; a new epoch: readers pull again from the start\n", coll, shards)
		return err
	}
	if cmd == "mark-restored" {
		if err := st.BumpEpochs(ctx); err != nil {
			return fmt.Errorf("mark %s restored: %w", storeurl.Redact(raw), err)
		}
		if r, ok := st.(allRepairer); ok {
			rctx, rcancel := context.WithTimeout(parent, rebuildLimit)
			defer rcancel()
			err := r.RepairAll(rctx, func(coll string, rep stores.RepairReport) {
				fmt.Fprintf(stdout, "collection %s: log rebuilt from its records: %d records, %d unreadable records dropped\n", coll, rep.Records, rep.Lost)
			})
			if err != nil {
				return fmt.Errorf("mark %s restored: the new epoch is started, but rebuilding the logs failed (run mark-restored again, or convergo repair for each collection left fenced): %w", storeurl.Redact(raw), err)
			}
		}
	}
	id, err := st.Identity(ctx)
	if err != nil {
		return err
	}
	if cmd == "mark-restored" {
		_, err = fmt.Fprintf(stdout, "store %s marked restored: every collection starts a new epoch; readers will be reset\n", id)
		return err
	}
	_, err = fmt.Fprintln(stdout, id)
	return err
}

// openForTool opens the store a command-line tool (store, deny, repair)
// works on, from a URL as serve takes it, logging warnings to stderr. A
// memory: store lives and dies with its server, so a tool that needs
// the server's own data refuses one, saying why (memory); "" allows it.
// It creates no store (storeurl.Options.Existing).
// Of opts it uses all but Logger. It returns the store, its kind and the
// logger.
func openForTool(ctx context.Context, raw string, stderr io.Writer, memory string, opts storeurl.Options) (stores.Store, string, *slog.Logger, error) {
	spec, err := storeurl.Parse(raw)
	if err != nil {
		return nil, "", nil, err
	}
	if spec.Kind == "memory" && memory != "" {
		return nil, "", nil, errors.New("a memory: store lives and dies with its server; " + memory)
	}
	// A tool works on the store a server serves: one it created (a typo
	// in the URL, or the default bolt:convergo.db run from another
	// directory) would take a deny or a restore that no server ever sees.
	opts.Existing = true
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.Logger = log
	st, err := spec.Open(ctx, opts)
	if errors.Is(err, bolt.ErrLocked) {
		// The embedded store's file is held by the server that serves it.
		return nil, "", nil, fmt.Errorf("%w; stop the server first (a bolt file is open in one process at a time), or run the server on a store it shares (Redis, DynamoDB)", err)
	}
	if err != nil {
		return nil, "", nil, err
	}
	return st, spec.Kind, log, nil
}

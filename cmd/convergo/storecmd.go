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
	"github.com/convergo/convergo/stores/storeurl"
)

const storeUsage = `usage: convergo store <command> --store URL

commands:
  mark-restored   after restoring the store from a backup: start a new epoch
                  of every collection, so that every reader is reset
  identity        print the store's identity

See docs/operations.md, "Backup and restore".
`

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
	if cmd != "mark-restored" && cmd != "identity" {
		fmt.Fprint(stderr, storeUsage)
		return fmt.Errorf("unknown store command %q", cmd)
	}
	var raw string
	fs := flag.NewFlagSet("convergo store "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&raw, "store", "", "the store `URL`, as for serve (CONVERGO_STORE); required")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if raw == "" {
		return errors.New("--store (or CONVERGO_STORE) is required")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, _, _, err := openForTool(ctx, raw, stderr, "there is nothing to mark")
	if err != nil {
		return err
	}
	defer st.Close()
	if cmd == "mark-restored" {
		if err := st.BumpEpochs(ctx); err != nil {
			return fmt.Errorf("mark %s restored: %w", storeurl.Redact(raw), err)
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
// It returns the store, its kind and the logger.
func openForTool(ctx context.Context, raw string, stderr io.Writer, memory string) (stores.Store, string, *slog.Logger, error) {
	spec, err := storeurl.Parse(raw)
	if err != nil {
		return nil, "", nil, err
	}
	if spec.Kind == "memory" && memory != "" {
		return nil, "", nil, errors.New("a memory: store lives and dies with its server; " + memory)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := spec.Open(ctx, storeurl.Options{Logger: log})
	if err != nil {
		return nil, "", nil, err
	}
	return st, spec.Kind, log, nil
}

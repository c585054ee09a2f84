package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/storeurl"
	"github.com/convergo/convergo/transport"
)

// denyArgs are the flags of convergo deny and convergo allow.
type denyArgs struct {
	raw, subject, tokenID, reason, by string
	list                              bool
	dur                               time.Duration
}

// denyFlags returns the flags of convergo name (deny or allow), writing
// its usage to stderr.
func denyFlags(name string, stderr io.Writer) (*flag.FlagSet, *denyArgs) {
	var a denyArgs
	fs := flag.NewFlagSet("convergo "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.raw, "store", "", "the store `URL`, as for serve (CONVERGO_STORE); required")
	fs.StringVar(&a.subject, "subject", "", "the `subject` (a token's sub) to "+name)
	fs.StringVar(&a.tokenID, "token-id", "", "the token `id` (a token's jti) to "+name)
	if name == "deny" {
		fs.DurationVar(&a.dur, "for", 0, "how long the entry denies, a `duration` (0: for ever)")
		fs.StringVar(&a.reason, "reason", "", "the `reason`, for people reading the list")
		fs.StringVar(&a.by, "by", os.Getenv("USER"), "`who` denies, for people reading the list")
		fs.BoolVar(&a.list, "list", false, "print the deny list instead")
	}
	return fs, &a
}

// denyCommand runs convergo deny and convergo allow: they edit the deny
// list in the store, which every server on the store follows
// (docs/operations.md, "Deny list"). allow deletes an entry; deny --list
// prints the entries.
func denyCommand(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	fs, a := denyFlags(name, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	raw, subject, tokenID, reason, by, list, dur := a.raw, a.subject, a.tokenID, a.reason, a.by, a.list, a.dur
	if raw == "" {
		return errors.New("--store (or CONVERGO_STORE) is required")
	}
	var id string
	switch {
	case list && (subject != "" || tokenID != ""):
		return errors.New("--list takes no --subject or --token-id")
	case list:
	case (subject == "") == (tokenID == ""):
		return errors.New("give one of --subject and --token-id")
	case subject != "":
		id = transport.DenySubject + subject
	default:
		id = transport.DenyTokenID + tokenID
	}
	if dur < 0 {
		return badFlag("for", dur, "must be 0 (for ever) or positive")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, _, log, err := openForTool(ctx, raw, stderr, "deny through a store the server shares", storeurl.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	eng, err := engine.Open(engine.Config{Store: st, Logger: log, PollInterval: -1})
	if err != nil {
		return err
	}
	defer eng.Close()
	switch {
	case list:
		entries, err := transport.DenyEntries(ctx, eng)
		if err != nil {
			return err
		}
		for _, e := range entries {
			until := "forever"
			if !e.Until.IsZero() {
				until = e.Until.UTC().Format(time.RFC3339)
				if e.Until.Before(time.Now()) {
					until += " (ended)"
				}
			}
			if _, err := fmt.Fprintf(stdout, "%s\tuntil %s\tby %s\t%s\n", e.ID, until, e.By, e.Reason); err != nil {
				return err
			}
		}
		return nil
	case name == "allow":
		if err := transport.Allow(ctx, eng, id); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s allowed again\n", id)
		return err
	}
	e := transport.DenyEntry{ID: id, Reason: reason, By: by}
	if dur > 0 {
		e.Until = time.Now().Add(dur)
	}
	if err := transport.Deny(ctx, eng, e); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s denied; every server on the store refuses it with revoked and closes its live sessions\n", id)
	return err
}

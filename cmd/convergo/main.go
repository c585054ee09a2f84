// Command convergo runs the Convergo sync server and issues its tokens.
//
//	convergo serve [flags]     serve the sync protocol, the demo and the JS library
//	convergo token [flags]     print a signed access token
//	convergo store mark-restored --store URL
//	                           after restoring a backup: reset every reader
//	                           (DynamoDB: and rebuild every collection's log)
//	convergo store reshard --store URL --collection C --shards K
//	                           rebuild a DynamoDB collection's log into K shards
//	convergo repair --store URL --collection C
//	                           rebuild a collection's log and head from its
//	                           records (Redis, DynamoDB)
//	convergo deny --store URL (--subject S | --token-id J) [--for D] [--reason T]
//	convergo allow --store URL (--subject S | --token-id J)
//	convergo deny --store URL --list
//	                           edit or print the deny list every server follows
//	convergo version           print the version
//
// Every flag can also be set with an environment variable: CONVERGO_ and the
// flag's name in capitals with dashes as underscores (--max-drift is
// CONVERGO_MAX_DRIFT). A flag on the command line wins. serve warns of a
// CONVERGO_ variable that nothing reads (env.go). See docs/operations.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal during the graceful shutdown kills the process
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, errUnclosed) {
		os.Exit(1) // logged by serve
	}
	if err != nil {
		// serve logged it under --log-format json (loggedError); a
		// plain-text line after the JSON ones would break their parsers.
		if !errors.Is(err, flag.ErrHelp) && !errors.As(err, new(loggedError)) {
			fmt.Fprintln(os.Stderr, "convergo:", err)
		}
		os.Exit(2)
	}
}

const usage = `usage: convergo <command> [flags]

commands:
  serve     serve the sync protocol, the demo app and the JS library
  token     print a signed access token
  store     operator commands on a store (mark-restored after a restore, reshard)
  repair    rebuild a collection's log and head from its records (Redis, DynamoDB)
  deny      deny a subject or token id access (--list prints the deny list)
  allow     remove a subject or token id from the deny list
  version   print the version

Run "convergo <command> -h" for a command's flags.
`

// run runs one command until it finishes or ctx is cancelled (serve shuts
// down gracefully then).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "token":
		return token(args[1:], stdout, stderr)
	case "store":
		return storeCommand(ctx, args[1:], stdout, stderr)
	case "repair":
		return repairCommand(ctx, args[1:], stdout, stderr)
	case "deny", "allow":
		return denyCommand(ctx, args[0], args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "convergo", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func versionString() string {
	v := version
	info, ok := debug.ReadBuildInfo()
	if v == "" && ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	if v == "" {
		v = "dev"
	}
	if ok {
		var rev, dirty string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			v += " (" + rev + dirty + ")"
		}
		v += " " + info.GoVersion
	}
	return v
}

// parseFlags parses args, then sets every flag not given on the command line
// from its environment variable, if set.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// badFlag is how every command refuses a number or duration flag whose
// value would not mean what it says (0 read as a default, a negative
// lifetime): the error names the flag, its value and the bound, "--ttl
// 0s: must be positive". Each command checks its flags before it opens a
// store or starts anything; docs/operations.md says what each refuses.
func badFlag(name string, value any, want string) error {
	return fmt.Errorf("--%s %v: %s", name, value, want)
}

func envName(flagName string) string {
	return "CONVERGO_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// listFlag is a flag of comma-separated values that may be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

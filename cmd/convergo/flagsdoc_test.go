package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServeFlagsDocumented holds the flags table of docs/operations.md to
// serveFlags: every flag of convergo serve has a row, and the row's
// default is the flag's own ((none) for an empty one), so the docs hold no
// default of their own (a duration may be written shorter: 1h).
func TestServeFlagsDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // flag name → its default cell
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) < 3 {
			t.Fatalf("docs/operations.md: flag row of %d cells: %s", len(cells), line)
		}
		rows[strings.Trim(cells[0], "`-")] = cells[1]
	}
	fs, _ := serveFlags(io.Discard)
	// Defaults the docs describe rather than print: one drawn at random.
	described := map[string]string{"replica": "random `srv-…`"}
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		got, ok := rows[f.Name]
		if !ok {
			t.Errorf("docs/operations.md has no row for --%s", f.Name)
			return
		}
		want := "`" + f.DefValue + "`"
		if d, ok := described[f.Name]; ok {
			want = d
		} else if f.DefValue == "" || f.DefValue == "[]" {
			want = "(none)"
		}
		// A duration may be written shorter (1h for 1h0m0s).
		if d, err := time.ParseDuration(f.DefValue); err == nil && strings.Trim(got, "`") != got {
			if g, err := time.ParseDuration(strings.Trim(got, "`")); err == nil && g == d {
				return
			}
		}
		if got != want {
			t.Errorf("docs/operations.md gives --%s the default %s; the flag's is %s", f.Name, got, want)
		}
	})
	if n == 0 {
		t.Fatal("serveFlags defines no flags")
	}
}

var secretFlag = regexp.MustCompile(`--secret[ =]\S`)

// TestDocsKeepTheSecretOffTheCommandLine: docs/operations.md says to keep
// the secret in the environment, not on the command line, where ps shows
// it; the commands the docs give to copy must do so too (they passed
// --secret "$SECRET" to serve and token).
func TestDocsKeepTheSecretOffTheCommandLine(t *testing.T) {
	for _, name := range []string{"README.md", "docs/operations.md", "docs/security.md", "docs/embedding.md", "docs/redis.md", "jsclient/README.md"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		inCode := false
		for n, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inCode = !inCode
				continue
			}
			if inCode && secretFlag.MatchString(line) {
				t.Errorf("%s:%d passes the secret on the command line: %s", name, n+1, strings.TrimSpace(line))
			}
		}
	}
}

// TestStoreURLParamsInServeHelp: every store URL parameter the table of
// docs/operations.md ("Store URLs") gives is in --store's usage too, which
// is what serve -h shows (the usage left out DynamoDB's poll, shards and
// turn).
func TestStoreURLParamsInServeHelp(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i := strings.Index(doc, "## Store URLs")
	if i < 0 {
		t.Fatal("docs/operations.md has no section ## Store URLs")
	}
	doc = doc[i:]
	table := strings.Index(doc, "| URL |")
	if table < 0 {
		t.Fatal("docs/operations.md, Store URLs: no table")
	}
	doc = doc[table:]
	doc = doc[:strings.Index(doc, "\n\n")]
	fs, _ := serveFlags(io.Discard)
	usage := fs.Lookup("store").Usage
	param := regexp.MustCompile(`[?&\[]([a-z_]+)=`)
	n := 0
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		scheme, _, _ := strings.Cut(strings.Trim(strings.Split(line, "|")[1], " `"), ":")
		if !strings.Contains(usage, scheme+":") {
			t.Errorf("--store's usage does not name the scheme %s:", scheme)
		}
		for _, m := range param.FindAllStringSubmatch(line, -1) {
			n++
			if !strings.Contains(usage, m[1]+"=") {
				t.Errorf("docs/operations.md gives the %s URL parameter %s; --store's usage does not: %s", scheme, m[1], usage)
			}
		}
	}
	if n == 0 {
		t.Fatal("no URL parameters found in docs/operations.md, Store URLs")
	}
}

// TestFlagsNamePlaceholders walks every command's flags: each one that
// takes a value names it in its usage, backquoted (flag.UnquoteUsage),
// so -h shows "-issuer issuer" rather than the bare type ("-issuer
// string", "-ttl duration", "-burst int"). Every command of the usage
// text is walked.
func TestFlagsNamePlaceholders(t *testing.T) {
	serve, _ := serveFlags(io.Discard)
	token, _ := tokenFlags(io.Discard)
	deny, _ := denyFlags("deny", io.Discard)
	allow, _ := denyFlags("allow", io.Discard)
	repair, _, _ := repairFlags(io.Discard)
	sets := map[string][]*flag.FlagSet{
		"serve":  {serve},
		"token":  {token},
		"deny":   {deny},
		"allow":  {allow},
		"repair": {repair},
	}
	for _, cmd := range []string{"mark-restored", "identity", "reshard"} {
		fs, _ := storeFlags(cmd, io.Discard)
		sets["store"] = append(sets["store"], fs)
		if !strings.Contains(storeUsage, "\n  "+cmd+" ") {
			t.Errorf("store command %s is not in the store usage", cmd)
		}
	}
	commands := regexp.MustCompile(`(?m)^  ([a-z]+) `).FindAllStringSubmatch(usage, -1)
	if len(commands) == 0 {
		t.Fatal("no commands in the usage text")
	}
	for _, m := range commands {
		if _, ok := sets[m[1]]; !ok && m[1] != "version" {
			t.Errorf("command %s: its flags are not walked here", m[1])
		}
	}
	for name, fss := range sets {
		for _, fs := range fss {
			n := 0
			fs.VisitAll(func(f *flag.Flag) {
				n++
				if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
					return
				}
				if strings.Count(f.Usage, "`") < 2 {
					placeholder, _ := flag.UnquoteUsage(f)
					t.Errorf("%s: -%s shows -%s %s: name its value in the usage, backquoted", fs.Name(), f.Name, f.Name, placeholder)
				}
			})
			if n == 0 {
				t.Errorf("%s (%s) has no flags", fs.Name(), name)
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// serve warns once, at WARN, of each CONVERGO_* variable in its
// environment that no convergo command reads, naming the closest known
// name when one is near; the variables of the other commands' flags and
// of the test suites and scripts are known.
func TestServeWarnsOfUnknownEnv(t *testing.T) {
	// The misspelt names are built, so that TestEnvNamesKnown does not
	// find them in this file.
	typo, far := "CONVERGO_"+"MAX_DIRFT", "CONVERGO_"+"QWXZ_PLUGH"
	t.Setenv(typo, "1m")
	t.Setenv(far, "1")
	t.Setenv("CONVERGO_TTL", "1h")            // convergo token's --ttl
	t.Setenv("CONVERGO_REDIS_ADDR", "x:6379") // the test suites'
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the server starts and stops at once
	var logs bytes.Buffer
	if err := run(ctx, []string{"serve", "--store", "memory:", "--addr", "127.0.0.1:0", "--log-format", "json"}, nil, &logs); err != nil {
		t.Fatal(err)
	}
	warned := map[string]string{} // name: closest
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		name, _ := rec["name"].(string)
		if rec["level"] != "WARN" || !strings.HasPrefix(name, "CONVERGO_") {
			continue
		}
		if _, dup := warned[name]; dup {
			t.Errorf("%s warned of twice", name)
		}
		warned[name], _ = rec["closest"].(string)
	}
	want := map[string]string{typo: "CONVERGO_MAX_DRIFT", far: ""}
	if len(warned) != len(want) || warned[typo] != want[typo] || warned[far] != "" {
		t.Fatalf("warned of %v, want %v; logs:\n%s", warned, want, logs.String())
	}
	if _, ok := warned[far]; !ok {
		t.Fatalf("no warning of %s; logs:\n%s", far, logs.String())
	}
}

// Every CONVERGO_* name in the repository is known (knownEnv): a flag's
// variable, or one of otherEnv, which docs/operations.md lists. A variable
// a test or script starts to read without joining otherEnv would have
// serve warn of it in every test run.
func TestEnvNamesKnown(t *testing.T) {
	known := knownEnv()
	name := regexp.MustCompile(`CONVERGO_[A-Z0-9][A-Z0-9_]*`)
	found := map[string]string{} // name: a file that has it
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".sh", ".js", ".mjs", ".ts", ".json", ".yml", ".yaml", "":
		default:
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range name.FindAllString(string(data), -1) {
			found[n] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var unknown []string
	for n, path := range found {
		if !known[n] {
			unknown = append(unknown, n+" ("+path+")")
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("CONVERGO_* names no command reads and otherEnv lacks: %v", unknown)
	}
	if len(found) < 10 {
		t.Fatalf("found only %d names: is the walk in the repository?", len(found))
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range otherEnv {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/operations.md does not list %s", n)
		}
	}
}

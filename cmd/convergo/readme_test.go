package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/bolt"
)

// TestReadmeScopedSyncRunsAsWritten runs the README's scoped-sync commands
// as a newcomer types them, on the embedded store (no Redis to run): the
// rules file parses as serve parses it, the token carries the claim, and
// deny writes the deny list of the store the server made. The README once
// offered "leave CONVERGO_STORE out for the embedded store", and then deny,
// which has no default store, failed: "--store (or CONVERGO_STORE) is
// required".
func TestReadmeScopedSyncRunsAsWritten(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i := strings.Index(readme, "## Scoped sync")
	if i < 0 {
		t.Fatal("README.md has no section ## Scoped sync")
	}
	section := readme[i:]
	start := strings.Index(section, "```sh\n")
	if start < 0 {
		t.Fatal("README.md, Scoped sync: no sh block")
	}
	block := section[start+len("```sh\n"):]
	block = block[:strings.Index(block, "```")]

	dir := t.TempDir()
	t.Chdir(dir) // the commands name files relative to where they run
	// The environment the README's commands run in: only what they export.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CONVERGO_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	ctx := context.Background()
	lines := strings.Split(block, "\n")
	var ran []string
	for n := 0; n < len(lines); n++ {
		line := strings.TrimSpace(lines[n])
		switch {
		case line == "":
		case strings.HasPrefix(line, "cat > "):
			// cat > FILE <<'END' ... END
			f := strings.Fields(line)
			name, end := f[2], strings.Trim(strings.TrimPrefix(f[3], "<<"), "'\"")
			var body []string
			for n++; n < len(lines) && strings.TrimSpace(lines[n]) != end; n++ {
				body = append(body, lines[n])
			}
			if err := os.WriteFile(name, []byte(strings.Join(body, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "export "):
			words, comment := shellWords(t, strings.TrimPrefix(line, "export "))
			for _, w := range words {
				name, value, ok := strings.Cut(w, "=")
				if !ok {
					t.Fatalf("README.md: export of %q", w)
				}
				if strings.HasPrefix(value, "$(openssl rand -hex 32)") {
					value = strings.Repeat("ab", 32)
				}
				t.Setenv(name, value)
			}
			// The README may show another store than the embedded one
			// and say how to get the embedded one instead.
			if s := os.Getenv("CONVERGO_STORE"); s != "" && !strings.HasPrefix(s, "bolt:") && strings.Contains(comment, "leave CONVERGO_STORE out") {
				os.Unsetenv("CONVERGO_STORE")
			}
		case strings.HasPrefix(line, "go run ./cmd/convergo "):
			words, _ := shellWords(t, strings.TrimPrefix(line, "go run ./cmd/convergo "))
			if words[len(words)-1] == "&" {
				words = words[:len(words)-1]
			}
			ran = append(ran, words[0])
			switch words[0] {
			case "serve":
				// The server: its rules file must parse, and its store
				// is made here (what deny finds, as it would find the
				// server's file once the server is stopped).
				fs, c := serveFlags(&bytes.Buffer{})
				if err := parseFlags(fs, words[1:]); err != nil {
					t.Fatalf("README.md: %s: %v", line, err)
				}
				data, err := os.ReadFile(c.rules)
				if err != nil {
					t.Fatalf("README.md: %s: %v", line, err)
				}
				if _, err := engine.ParseRules(data); err != nil {
					t.Fatalf("README.md: %s: the rules file: %v", line, err)
				}
				path, ok := strings.CutPrefix(c.store, "bolt:")
				if !ok {
					t.Fatalf("README.md: %s: the store %s is not the embedded one", line, c.store)
				}
				st, err := bolt.Open(ctx, path, bolt.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			default:
				var out, errOut bytes.Buffer
				if err := run(ctx, words, &out, &errOut); err != nil {
					t.Fatalf("README.md: %s: %v\n%s", line, err, errOut.String())
				}
				if words[0] == "token" {
					parts := strings.Split(strings.TrimSpace(out.String()), ".")
					if len(parts) != 3 {
						t.Fatalf("README.md: %s printed %q", line, out.String())
					}
					payload, err := base64.RawURLEncoding.DecodeString(parts[1])
					if err != nil {
						t.Fatal(err)
					}
					var claims map[string]any
					if err := json.Unmarshal(payload, &claims); err != nil {
						t.Fatal(err)
					}
					if teams, _ := claims["teams"].([]any); len(teams) != 1 || teams[0] != "red" {
						t.Errorf("README.md: %s: claims %s", line, payload)
					}
				}
			}
		default:
			t.Fatalf("README.md, Scoped sync: a line this test does not know: %q", line)
		}
	}
	if strings.Join(ran, " ") != "serve token deny" {
		t.Fatalf("README.md, Scoped sync: ran %v, want serve, token, deny", ran)
	}
	// The deny reached the store the server serves.
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"deny", "--list", "--store", "bolt:convergo.db"}, &out, &errOut); err != nil {
		t.Fatalf("deny --list: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "sub:alice") {
		t.Fatalf("deny --list after the README's deny:\n%s", out.String())
	}
}

// shellWords splits a line of the README as sh does for the quoting it
// uses ('…', "…"), and returns the comment after an unquoted #.
func shellWords(t *testing.T, line string) (words []string, comment string) {
	t.Helper()
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				w.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == '#' && !in:
			return words, line[i+1:]
		case c == ' ' || c == '\t':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		case c == '$' && strings.HasPrefix(line[i:], "$(") && quote == 0:
			// A command substitution: kept whole as one word's text.
			j := strings.IndexByte(line[i:], ')')
			w.WriteString(line[i : i+j+1])
			i += j
			in = true
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("unclosed quote in %q", line)
	}
	if in {
		words = append(words, w.String())
	}
	return words, ""
}

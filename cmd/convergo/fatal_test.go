package main

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A fatal error of serve under --log-format json is a JSON log line (level
// ERROR, the error in err), so that a log pipeline parses every line the
// server writes; under the text format it is the plain "convergo: …" line.
// An error found before the log format is known (a flag that does not
// parse) stays plain text under both.
func TestServeFatalErrorsFollowTheLogFormat(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "convergo")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	missing := filepath.Join(dir, "missing-rules.json")
	for _, tc := range []struct {
		name string
		args []string
		json bool   // every line is JSON, the last an ERROR
		want string // in the last line's err (json) or the last line (text)
	}{
		{"json rules missing", []string{"--log-format", "json", "--rules", missing}, true, "--rules"},
		{"json address taken", []string{"--log-format", "json", "--addr", taken.Addr().String()}, true, "listen"},
		{"json bad level", []string{"--log-format", "json", "--log-level", "loud"}, true, "--log-level"},
		{"json bad number", []string{"--log-format", "json", "--max-leases", "0"}, true, "--max-leases 0"},
		{"text rules missing", []string{"--rules", missing}, false, "convergo: --rules"},
		{"json flag unknown", []string{"--log-format", "json", "--nope"}, false, "convergo: flag provided but not defined: -nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"serve", "--store", "memory:", "--addr", "127.0.0.1:0"}, tc.args...)...)
			cmd.Env = append(os.Environ(), "CONVERGO_SECRET=")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit: %v, want status 2; output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			last := lines[len(lines)-1]
			if !tc.json {
				if last != tc.want && !strings.HasPrefix(last, tc.want) {
					t.Fatalf("last line %q, want it to start %q; output:\n%s", last, tc.want, out)
				}
				return
			}
			for i, line := range lines {
				var obj map[string]any
				if err := json.Unmarshal([]byte(line), &obj); err != nil {
					t.Fatalf("line %d of the output with --log-format json is not JSON: %q", i+1, line)
				}
				if i < len(lines)-1 {
					continue
				}
				if obj["level"] != "ERROR" {
					t.Errorf("last line's level %v, want ERROR: %s", obj["level"], line)
				}
				if e, _ := obj["err"].(string); !strings.Contains(e, tc.want) {
					t.Errorf("last line's err %q, want it to hold %q: %s", e, tc.want, line)
				}
			}
		})
	}
}

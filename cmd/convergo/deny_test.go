package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestDenyCommands: deny, deny --list and allow edit the deny list of a
// bolt file.
func TestDenyCommands(t *testing.T) {
	ctx := context.Background()
	store := "bolt:" + newBoltFile(t)
	cmd := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(ctx, append(args, "--store", store), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	cmd("deny", "--subject", "alice", "--reason", "left", "--by", "ops")
	cmd("deny", "--token-id", "tok-9", "--for", "1h")
	list := cmd("deny", "--list")
	if !strings.Contains(list, "sub:alice\tuntil forever\tby ops\tleft") || !strings.Contains(list, "jti:tok-9\tuntil 20") {
		t.Fatalf("list:\n%s", list)
	}
	cmd("allow", "--subject", "alice")
	if list := cmd("deny", "--list"); strings.Contains(list, "alice") || !strings.Contains(list, "tok-9") {
		t.Fatalf("after allow:\n%s", list)
	}
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"deny", "--store", store},
		{"deny", "--store", store, "--subject", "a", "--token-id", "b"},
		{"allow", "--store", store, "--list"},
		{"deny", "--store", "memory:", "--subject", "a"},
	} {
		if err := run(ctx, args, &out, &errOut); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

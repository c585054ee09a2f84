package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores"
)

// The number and duration flags of the operator commands are refused as
// serve's are (TestServeNumericFlags): by name, value and bound, before
// any store is opened (the store given here does not exist, so a check
// made after opening it would report the missing file instead).
func TestOperatorNumericFlags(t *testing.T) {
	missing := "bolt:" + filepath.Join(t.TempDir(), "missing.db")
	secret := "0123456789abcdef0123456789abcdef"
	token := []string{"token", "--sub", "a", "--read", "x", "--secret", secret}
	reshard := []string{"store", "reshard", "--store", missing, "--collection", "todos"}
	deny := []string{"deny", "--store", missing, "--subject", "s"}
	for _, tc := range []struct {
		args []string
		want string // the error's start; "" for no error
	}{
		{append(token, "--ttl", "0"), "--ttl 0s: must be positive"},
		{append(token, "--ttl", "-1h"), "--ttl -1h0m0s: must be positive"},
		{append(token, "--ttl", "1ms"), ""},
		{append(deny, "--for", "-1s"), "--for -1s: must be 0 (for ever) or positive"},
		{append(reshard, "--shards", "-1"), "--shards -1: must be in 1.." + strconv.Itoa(stores.MaxShards)},
		{append(reshard, "--shards", strconv.Itoa(stores.MaxShards+1)), "--shards " + strconv.Itoa(stores.MaxShards+1) + ": must be in 1.." + strconv.Itoa(stores.MaxShards)},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard, io.Discard)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

// docs/operations.md gives the bound of --shards as the code has it.
func TestOperatorNumericFlagsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "`convergo store reshard --shards` outside 1.." + strconv.Itoa(stores.MaxShards)
	if doc := strings.Join(strings.Fields(string(raw)), " "); !strings.Contains(doc, want) {
		t.Errorf("docs/operations.md does not say %q", want)
	}
}

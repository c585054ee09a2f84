package storeurl_test

import (
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/storeurl"
)

// TestRedactHidesEveryPassword: whatever the password holds, the redacted
// URL (what convergo serve logs at start, and what errors about the store
// say) does not show it. A password with a '/' that Parse reads as the
// password was logged whole, since Redact took the '/' for the end of the
// host; one with a '?' or '#' that Parse refuses was shown whole by the
// refusal.
func TestRedactHidesEveryPassword(t *testing.T) {
	for _, pass := range []string{"s3cret", "se/cret", "se/cr?et", "sec?ret", "se#cret", "s@cret", "se%2Fcret", "se:cret"} {
		for _, raw := range []string{
			"redis://app:" + pass + "@cache:6380/2",
			"redis://app:" + pass + "@cache:6380",
			"redis://app:" + pass + "@cache:6380/2?prefix=p:",
			"redis-cluster://app:" + pass + "@a:7001,b:7002?prefix=p:",
			"rediss://app:" + pass + "@cache:6380", // a scheme Parse does not know
		} {
			spec, err := storeurl.Parse(raw)
			if err == nil && spec.Kind == "redis" && spec.Redis.Password == "" {
				t.Errorf("%s: parsed without a password", raw)
			}
			got := storeurl.Redact(raw)
			if strings.Contains(got, pass) {
				t.Errorf("Redact(%q) = %q shows the password", raw, got)
			}
			if err != nil && strings.Contains(err.Error(), pass) {
				t.Errorf("Parse(%q): %v shows the password", raw, err)
			}
		}
	}
}

// TestParseErrorsHidePasswordParts: a password holding a '?' (which must
// be written %3F) is split by the query; Parse refuses it without
// echoing the parts it took for a database or a parameter's name.
func TestParseErrorsHidePasswordParts(t *testing.T) {
	for _, pass := range []string{"alpha?bravo", "alpha/bravo?charlie", "alpha?bravo&charlie=delta"} {
		for _, raw := range []string{
			"redis://app:" + pass + "@cache:6380/2",
			"redis://app:" + pass + "@cache:6380",
			"redis-cluster://app:" + pass + "@a:7001,b:7002?prefix=p:",
		} {
			_, err := storeurl.Parse(raw)
			if err == nil {
				t.Errorf("Parse(%q): no error", raw)
				continue
			}
			for _, part := range []string{"alpha", "bravo", "charlie", "delta"} {
				if strings.Contains(err.Error(), part) {
					t.Errorf("Parse(%q): %v shows %q of the password", raw, err, part)
				}
			}
		}
	}
	if _, err := storeurl.Parse("redis://h:1?capture=c=user@*"); err != nil {
		t.Errorf("a capture pattern with an '@': %v", err)
	}
}

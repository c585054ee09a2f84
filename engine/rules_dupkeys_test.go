package engine

import (
	"errors"
	"strings"
	"testing"
)

// TestParseRulesRefusesDuplicateKeys: a key given twice in a rule (a
// second "scope" pasted in meaning to narrow the first, a field's rule
// given twice) stopped nothing: encoding/json keeps the last, so the rules
// file silently meant less than it said (the first scope, the first bound,
// dropped). Like a misspelt key, it must stop the server. A pattern given
// twice at the top is two rules that both apply, as documented, and stays.
func TestParseRulesRefusesDuplicateKeys(t *testing.T) {
	for _, tc := range []struct{ name, file string }{
		{"scope twice", `{"todos.*": {"scope": "owner == $sub", "scope": "done == false"}}`},
		{"write twice", `{"todos.*": {"write": "owner == $sub", "write": "done == false"}}`},
		{"maxOffline twice", `{"todos.*": {"maxOffline": "720h", "maxOffline": "1h"}}`},
		{"schema twice", `{"todos.*": {"schema": {"fields": {"t": {"type": "int"}}}, "schema": {"fields": {}}}}`},
		{"a field twice", `{"todos.*": {"schema": {"fields": {"t": {"type": "string", "maxBytes": 10}, "t": {"type": "any"}}}}}`},
		{"a bound twice", `{"todos.*": {"schema": {"fields": {"t": {"type": "string", "maxBytes": 10, "maxBytes": 0}}}}}`},
		{"in an array-form scope", `{"todos.*": {"scope": ["eq", "owner", {"$": "sub", "$": "sub"}]}}`},
		{"in migrations", `{"todos": {"migrations": {"version": 2, "version": 1, "steps": []}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := ParseRules([]byte(tc.file))
			if err == nil {
				t.Fatalf("accepted as %+v", rules)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "twice") {
				t.Fatalf("error %v: want ErrInvalid, saying a key is given twice", err)
			}
		})
	}
	rules, err := ParseRules([]byte(`{"todos.*": {"scope": "owner == $sub"}, "todos.*": {"scope": "done == false"}}`))
	if err != nil || len(rules) != 2 {
		t.Fatalf("a pattern given twice: %d rules, %v; want both", len(rules), err)
	}
}

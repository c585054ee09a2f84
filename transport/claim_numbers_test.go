package transport

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
)

// A claim is a JSON value, and scopes bind it by the number rule of JSON
// documents (crdt.AppendJSONNumber), as they bind the numbers of the
// token's cvg_scopes and of the rules file: an integer written without
// fraction or exponent is that integer, of any size. Read into a float64,
// the claim org 9007199254740993 (a 64-bit id, as many issuers write
// them) bound as the float 2^53: its holder read the records of another
// org, whose id is that float, and not its own.
func TestLargeIntegerClaimBindsExactly(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"docs": {"scope": "org == $claims.org", "write": ["all"]}}`)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	exact, err := crdt.AppendJSONNumber(nil, "9007199254740993")
	if err != nil {
		t.Fatal(err)
	}
	float := crdt.AppendJSONFloat(nil, 1<<53) // another org's, a float
	field := func(id string, v []byte) crdt.Change {
		c := set(t, "docs", id, map[string]any{"org": 0})
		f := c.Record.Fields["org"]
		f.Value = v
		c.Record.Fields["org"] = f
		return c
	}
	ts.push(t, admin, field("mine", exact), field("theirs", float), set(t, "docs", "small", map[string]any{"org": 7}))
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		org  string
		want []string
	}{
		{"9007199254740993", []string{"mine"}},
		{"7", []string{"small"}},
		{"7.0", []string{"small"}}, // JSON's view: a whole number
	} {
		tok := signPayload(fmt.Sprintf(`{"sub":"carol","exp":%d,"read":["docs"],"org":%s}`, exp, tc.org))
		if ids, _, _ := ts.pullAll(t, tok, "docs", nil, nil); !slices.Equal(ids, tc.want) {
			t.Errorf("claim org %s reads %v, want %v", tc.org, ids, tc.want)
		}
	}
}

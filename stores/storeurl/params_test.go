package storeurl_test

import (
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/storeurl"
)

// TestParseRefusesARepeatedParameter: a parameter given twice (other than
// the repeatable capture) was taken silently, the last prefix or
// written_cache of a Redis URL, the first region, endpoint or create of a
// DynamoDB one, so a server could serve other keys or another table than
// one of the two the URL names.
func TestParseRefusesARepeatedParameter(t *testing.T) {
	for _, raw := range []string{
		"redis://h:1?prefix=a:&prefix=b:",
		"redis://h:1?written_cache=1MiB&written_cache=2MiB",
		"redis-cluster://h:1,h:2?prefix=a:&prefix=b:",
		"dynamodb://t?region=us-east-1&region=eu-west-1",
		"dynamodb://t?endpoint=http://a&endpoint=http://b",
		"dynamodb://t?capture=0&capture=1",
		"dynamodb://t?shards=2&shards=4",
	} {
		if spec, err := storeurl.Parse(raw); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", raw, spec)
		} else if !strings.Contains(err.Error(), "twice") {
			t.Errorf("Parse(%q): %v, want it to say a parameter is given twice", raw, err)
		}
	}
	if _, err := storeurl.Parse("redis://h:1?capture=a=x:*&capture=b=y:*"); err != nil {
		t.Errorf("capture given twice (two rules): %v", err)
	}
}

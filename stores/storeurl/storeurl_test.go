package storeurl_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/storeurl"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // fmt of the interesting fields, "" for an error
	}{
		{"memory:", "memory"},
		{"bolt:convergo.db", "bolt convergo.db"},
		{"bolt:/var/lib/c.db", "bolt /var/lib/c.db"},
		{"redis://127.0.0.1:6379", "redis [127.0.0.1:6379] cluster=false db=0 prefix= user= pass="},
		{"redis://u:p%40ss@h:1/3?prefix=app", "redis [h:1] cluster=false db=3 prefix=app user=u pass=p@ss"},
		{"redis://h", "redis [h:6379] cluster=false db=0 prefix= user= pass="},
		{"redis-cluster://a:1,b:2,c:3?prefix=x", "redis [a:1 b:2 c:3] cluster=true db=0 prefix=x user= pass="},
		{"redis://h:1?capture=todos=app:todo:*", "redis [h:1] cluster=false db=0 prefix= user= pass= capture=[{todos app:todo:* false}]"},
		{"redis://h:1?prefix=p&capture=todos=app:{todo}:*;mirror&capture=notes=n%26m:*", "redis [h:1] cluster=false db=0 prefix=p user= pass= capture=[{todos app:{todo}:* true} {notes n&m:* false}]"},
		{"redis-cluster://a:1?capture=t=x=y:*", "redis [a:1] cluster=true db=0 prefix= user= pass= capture=[{t x=y:* false}]"},
		{"redis://h:1?written_cache=4096", "redis [h:1] cluster=false db=0 prefix= user= pass= written_cache=4096"},
		{"redis://h:1?written_cache=32MiB", "redis [h:1] cluster=false db=0 prefix= user= pass= written_cache=33554432"},
		{"redis-cluster://a:1?written_cache=2GiB&prefix=p", "redis [a:1] cluster=true db=0 prefix=p user= pass= written_cache=2147483648"},
		{"redis://h:1?written_cache=512KiB", "redis [h:1] cluster=false db=0 prefix= user= pass= written_cache=524288"},
		{"redis://h:1?written_cache=0", "redis [h:1] cluster=false db=0 prefix= user= pass="},
		{"redis://h:1?written_cache=", ""},
		{"redis://h:1?written_cache=-1", ""},
		{"redis://h:1?written_cache=32MB", ""},
		{"redis://h:1?written_cache=1.5MiB", ""},
		{"redis://h:1?written_cache=99999999999GiB", ""},
		{"dynamodb://convergo?region=us-east-1&endpoint=http://127.0.0.1:8765&create=1&capture=1", "dynamodb convergo us-east-1 http://127.0.0.1:8765 true true"},
		{"dynamodb://tbl", "dynamodb tbl   false true"},
		{"dynamodb://tbl?capture=0", "dynamodb tbl   false false"},
		{"memory:x", ""},
		{"bolt:", ""},
		{"redis://a:1,b:2", ""},
		{"redis-cluster://a:1/2", ""},
		{"redis://h:1/x", ""},
		{"redis://h:1?db=2", ""},
		{"redis://h:1?capture=todos", ""},
		{"redis://h:1?capture==app:*", ""},
		{"redis://h:1?capture=todos=", ""},
		{"redis://h:1?capture=todos=;mirror", ""},
		{"redis://h:1?capture=todos=a:%zz", ""},
		{"dynamodb://", ""},
		{"dynamodb://t?create=maybe", ""},
		{"dynamodb://t?tabel=x", ""},
		{"postgres://x", ""},
		{"convergo.db", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			s, err := storeurl.Parse(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("no error, got %+v", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got string
			switch s.Kind {
			case "memory":
				got = "memory"
			case "bolt":
				got = "bolt " + s.Path
			case "redis":
				o := s.Redis
				got = fmt.Sprintf("redis %v cluster=%v db=%d prefix=%s user=%s pass=%s", o.Addrs, o.Cluster, o.DB, o.KeyPrefix, o.Username, o.Password)
				if len(o.Capture) > 0 {
					got += fmt.Sprintf(" capture=%v", o.Capture)
				}
				if o.WrittenCacheBytes != 0 {
					got += fmt.Sprintf(" written_cache=%d", o.WrittenCacheBytes)
				}
			case "dynamodb":
				o := s.DynamoDB
				got = fmt.Sprintf("dynamodb %s %s %s %v %v", o.Table, o.Region, o.Endpoint, o.CreateTable, o.Capture)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if got := storeurl.Redact("redis://u:secret@h:1/2"); strings.Contains(got, "secret") {
		t.Fatalf("redact: %s", got)
	}
}

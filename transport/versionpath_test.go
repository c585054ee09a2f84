package transport

import (
	"net/http"
	"strings"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// Every path of this version that is no endpoint is answered 404
// not_found in the protocol's error form (docs/protocol.md, section 1),
// so a client reads a code. http.ServeMux answers a path it would
// clean, or the prefix without its slash, with a redirect of its own (an
// HTML 301 or 307 without Convergo-Error), which a client following it
// would take to another path, and one not following it cannot read.
func TestPathsOfThisVersionAnswerInTheErrorForm(t *testing.T) {
	ts := newTestServer(t, nil)
	c := *ts.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, path := range []string{"/v2", "/v2/nope", "/v2/hello/", "/v2//hello", "/v2/./hello", "/v2/x/../hello"} {
		t.Run(path, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Path = path // unclean as written
			req.Header.Set(proto.HeaderProtocol, "2")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get(proto.HeaderError) != proto.CodeNotFound {
				t.Fatalf("POST %s: got %d %q (Location %q), want 404 %s", path, resp.StatusCode, resp.Header.Get(proto.HeaderError), resp.Header.Get("Location"), proto.CodeNotFound)
			}
		})
	}
}

package transport

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// A path of another protocol version than this server's (/vN/... with N
// not proto.Version: a newer client's, or version 1's) is answered in the
// protocol's error form, 400 unsupported_version, whatever the app serves
// beside the protocol: convergo serve mounts its demo app at "/", which
// answered a plain-text 404 to /v3/hello, so a client of a later version
// could not tell that the server speaks another version. Paths that only
// look like one (/v/, /vx/, /video) stay the app's.
func TestOtherVersionPathsUnsupported(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.srv.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the app's page", http.StatusTeapot)
	}))
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(proto.HeaderProtocol, "3")
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, path := range []string{"/v3/hello", "/v3/push", "/v3/live", "/v3/", "/v3", "/v10/pull", "/v0/hello", "/v1/hello", "/v20/x/y"} {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			resp, _ := do(method, path)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get(proto.HeaderError) != proto.CodeUnsupportedVersion {
				t.Errorf("%s %s: %d %q, want 400 %s", method, path, resp.StatusCode, resp.Header.Get(proto.HeaderError), proto.CodeUnsupportedVersion)
			}
		}
	}
	// What to do is said: an older client upgrades, a newer one needs a
	// newer server.
	for path, want := range map[string]string{
		"/v1/hello": "upgrade the client to version " + strconv.Itoa(proto.Version),
		"/v0/hello": "upgrade the client to version " + strconv.Itoa(proto.Version),
		"/v3/hello": "upgrade the server to serve version 3",
		"/v10/pull": "upgrade the server to serve version 10",
		// This version spelled with a leading zero is no other version.
		"/v02/hello": "this version's paths start /v" + strconv.Itoa(proto.Version) + "/",
		"/v002/pull": "this version's paths start /v" + strconv.Itoa(proto.Version) + "/",
	} {
		resp, body := do(http.MethodPost, path)
		var e proto.ErrorBody
		if err := proto.Decode([]byte(body), &e); err != nil || !strings.Contains(e.Message, want) {
			t.Errorf("POST %s: %d %q (%v), want a message saying %q", path, resp.StatusCode, e.Message, err, want)
		}
	}
	for _, path := range []string{"/v/hello", "/vx/hello", "/video", "/v3x/hello"} {
		if resp, body := do(http.MethodGet, path); resp.StatusCode != http.StatusTeapot || !strings.Contains(body, "the app's page") {
			t.Errorf("GET %s: %d %q, want the app's answer", path, resp.StatusCode, body)
		}
	}
}

// TestHandleUnderAVersionPathPanics: a path naming a protocol version
// (/vN/...) is the protocol's, and ServeHTTP answers one of another
// version before the mux, so an app's handler added there with Handle
// (an API of its own at /v1/users, say) would never be reached, without a
// word. Handle says so at once, as http.ServeMux does of a pattern it
// cannot take; paths that only look like one stay the app's.
func TestHandleUnderAVersionPathPanics(t *testing.T) {
	ts := newTestServer(t, nil)
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, pattern := range []string{"/v1/users", "/v3/", "GET /v1/users/{id}", "example.com/v10/x", "POST example.com/v2/extra", "/v3"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handle(%q) did not panic", pattern)
				}
			}()
			ts.srv.Handle(pattern, h)
		}()
	}
	for _, pattern := range []string{"/video/", "/v/x", "GET /vx/", "example.com/static/v1/"} {
		ts.srv.Handle(pattern, h)
	}
}

package transport

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A request is authenticated when its headers arrive, but its body may
// take up to the request timeout: a push (or pull) whose body is still
// arriving when the deny list names its principal is refused revoked
// once the body is in, and nothing of it is applied.
func TestDenyDuringRequestBody(t *testing.T) {
	for _, path := range []string{proto.PathPush, proto.PathPull} {
		t.Run(path, func(t *testing.T) {
			ts := newTestServer(t, nil)
			tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
			var body any = proto.PullRequest{Collection: "notes"}
			if path == proto.PathPush {
				body = proto.PushRequest{Replica: "c1", Changes: ts.bind(t, tok, []crdt.Change{change(t, "notes", "n1", "title", "after the deny")})}
			}
			raw, err := proto.Encode(body)
			if err != nil {
				t.Fatal(err)
			}
			pr, pw := io.Pipe()
			req, err := http.NewRequest(http.MethodPost, ts.URL+path, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(len(raw))
			req.Header.Set("Content-Type", proto.ContentType)
			req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
			req.Header.Set("Authorization", "Bearer "+tok)
			type result struct {
				status int
				header http.Header
				body   []byte
				err    error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := ts.Client().Do(req)
				if err != nil {
					done <- result{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				done <- result{resp.StatusCode, resp.Header, b, err}
			}()
			if _, err := pw.Write(raw[:1]); err != nil {
				t.Fatal(err)
			}
			// The server reserves the body's bytes once it has
			// authenticated the request, and holds them while it reads.
			for deadline := time.Now().Add(5 * time.Second); ts.metric(t, "convergo_body_bytes_in_flight") == 0; {
				if time.Now().After(deadline) {
					t.Fatal("the server never began to read the body")
				}
				time.Sleep(5 * time.Millisecond)
			}
			ts.srv.deny.mu.Lock()
			ts.srv.deny.until[DenySubject+"alice"] = 0
			ts.srv.deny.mu.Unlock()
			if _, err := io.Copy(pw, bytes.NewReader(raw[1:])); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			a := answer{status: r.status, header: r.header, body: r.body}
			if a.status != http.StatusForbidden || a.errorCode(t) != proto.CodeRevoked {
				t.Errorf("%s whose body ended after the deny: %d, want 403 revoked", path, a.status)
			}
			if rec, err := ts.eng.Get(context.Background(), "notes", "n1"); err == nil && rec != nil {
				t.Errorf("a denied principal's push was applied: %+v", rec)
			}
		})
	}
}

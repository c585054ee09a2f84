package client_test

import (
	"testing"
	"time"
)

// A write made after the token's subject changed, while a live session
// opened under the old subject is still open, must be applied as it is
// over HTTP (the new subject's replica), not refused.
func TestLivePushAfterSubjectChange(t *testing.T) {
	eng, r, signIn := switchingSubjects(t)
	ctx := t.Context()
	c := r.Client()
	put(t, r, "title", map[string]string{"a1": "alice's"})
	go func() { _ = r.Live(ctx) }()
	waitFor(t, "live delivered a1", func() bool { return len(r.Cursor("notes")) > 0 })
	time.Sleep(200 * time.Millisecond)
	signIn("bob") // the user switches; the app greets again
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("replica now %s", c.Replica())
	if err := r.Set("notes", "b1", "title", "bob's"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Logf("flush: %v", err)
	}
	for _, j := range r.Rejected() {
		t.Errorf("rejected: %+v", j)
	}
	rec, err := eng.Get(ctx, "notes", "b1")
	if err != nil || rec == nil {
		t.Errorf("bob's write not on the server: %v %v", rec, err)
	}
}

package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
)

// TestShutdownDelay runs `convergo serve --shutdown-delay` and sends it
// SIGTERM: for the delay, /readyz answers 503 "shutting down" while the
// server goes on serving everything else (the probes, new connections, a
// live session opened before the signal), so that a load balancer health
// checking /readyz takes the instance out before its listener closes.
// Without a delay the listener closes at the signal, /readyz refuses
// connections rather than answer 503, and a load balancer sends new
// connections to a closed port until its health check notices.
func TestShutdownDelay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and signals the convergo binary")
	}
	bin := buildConvergo(t)
	addr := freeAddr(t)
	base := "http://" + addr
	p := startProcess(t, "convergo serve", bin, "serve", "--addr", addr, "--store", "memory:",
		"--secret", string(secret), "--demo=false", "--log-level", "info", "--shutdown-delay", "10m")
	waitHTTP(t, p, base+"/readyz")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tok, got, push := watchNotes(ctx, t, base)
	push("before")
	waitID(t, got, "before")

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// /readyz goes 503 while the listener still answers.
	for {
		code, body, err := getURL(base + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz after SIGTERM with --shutdown-delay: %v, want 503 shutting down while the server drains (exited: %v)", err, p.exited())
		}
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "shutting down") {
				t.Fatalf("/readyz while draining: %d %q, want it to say shutting down", code, body)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body, err := getURL(base + "/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz while draining: %d %q %v, want 200", code, body, err)
	}
	// New connections are still served, and the live session opened
	// before the signal still streams.
	fresh, err := client.New(client.Config{URL: base, Token: tok, Device: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Hello(ctx); err != nil {
		t.Fatalf("hello while draining: %v", err)
	}
	push("during")
	waitID(t, got, "during")

	// A second signal stops the process at once.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		t.Fatal("the server did not stop at a second signal")
	}
}

// watchNotes is the scene of the shutdown tests at the server at base:
// alice's token, a client watching notes live until ctx ends (the ids of
// the records it is sent, on got) and push, which sets a record of notes
// from another client and checks that it was applied.
func watchNotes(ctx context.Context, t *testing.T, base string) (tok string, got <-chan string, push func(id string)) {
	t.Helper()
	auth, err := transport.NewJWT(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err = auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	watcher, err := client.New(client.Config{URL: base, Token: tok, Device: "watcher"})
	if err != nil {
		t.Fatal(err)
	}
	ids := make(chan string, 16)
	go func() {
		_ = watcher.Live(ctx, map[string][]byte{"notes": nil}, func(_ string, page client.Page) {
			for _, rec := range page.Records {
				ids <- rec.ID
			}
		}, nil)
	}()
	writer, err := client.New(client.Config{URL: base, Token: tok, Device: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	return tok, ids, func(id string) {
		t.Helper()
		now, err := writer.Now()
		if err != nil {
			t.Fatal(err)
		}
		rs, err := writer.Push(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField(id, "n", mustEncode(t, 1), now)}})
		if err != nil || len(rs) != 1 || rs[0].Status != client.StatusApplied {
			t.Fatalf("push %s: %v %+v", id, err, rs)
		}
	}
}

func getURL(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func waitID(t *testing.T, got <-chan string, want string) {
	t.Helper()
	for {
		select {
		case id := <-got:
			if id == want {
				return
			}
		case <-time.After(time.Minute):
			t.Fatalf("the live session did not deliver %s", want)
		}
	}
}

func mustEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

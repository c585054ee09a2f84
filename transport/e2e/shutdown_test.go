package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
)

// TestShutdownTimeoutFrozenStore runs `convergo serve --shutdown-timeout
// 1s` on a Redis of its own, subscribes a live session, freezes Redis
// with SIGSTOP (a host that stopped answering: no connection is refused,
// no reply comes) and sends SIGTERM once the engine's poll of the
// subscribed heads is waiting on it. The whole shutdown, closing the
// engine and the store included, ends within --shutdown-timeout: the
// process exits long before the store's own bound on a read (10 s), with
// status 1 and an error line saying what it could not close
// (docs/operations.md, "Shutdown"). The 6 s asserted is a functional bound
// of the flag, well above its 1 s and well below those 10 s, not a speed.
func TestShutdownTimeoutFrozenStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the convergo binary and redis-server")
	}
	rp, p, base := serveOnOwnRedis(t, "--log-level", "info", "--shutdown-timeout", "1s")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, got, push := watchNotes(ctx, t, base)
	push("before")
	waitID(t, got, "before") // the collection is subscribed: the engine polls its head

	if err := rp.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rp.cmd.Process.Signal(syscall.SIGCONT); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Logf("SIGCONT redis-server: %v", err)
		}
	})
	// Let the engine's poll of the subscribed head start, and wait on the
	// frozen Redis, before the signal.
	time.Sleep(engine.DefaultPollInterval + time.Second)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	select {
	case <-p.done:
	case <-time.After(6 * time.Second):
		t.Fatalf("convergo serve --shutdown-timeout 1s had not exited 6s after SIGTERM with its Redis frozen: closing the engine and the store is not bounded by the timeout")
	}
	t.Logf("exited %v after SIGTERM: %v", time.Since(signalled).Round(10*time.Millisecond), p.err)
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1 (the engine and the store were not closed)", p.err)
	}
	out := p.out.String()
	i := strings.Index(out, `level=ERROR msg="shutdown: not closed within the timeout" unclosed=`)
	if i < 0 {
		t.Fatalf("no error line saying what the shutdown could not close:\n%s", out)
	}
	t.Log(strings.SplitN(out[i:], "\n", 2)[0])
}

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/storetest"
)

// buildConvergo builds cmd/convergo into a temporary directory and returns
// the binary's path.
func buildConvergo(t *testing.T) string {
	t.Helper()
	_, here, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source tree")
	}
	root := filepath.Join(filepath.Dir(here), "..", "..")
	bin := filepath.Join(t.TempDir(), "convergo")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/convergo")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/convergo: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is a child process whose output is kept for failure reports.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *storetest.LogBuffer
	done chan struct{}
	err  error
}

// startProcess starts bin with args. The test's cleanup kills it if it is
// still running and, if the test failed, logs its output.
func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, args...), out: &storetest.LogBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", name, p.cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *process) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Logf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not die after SIGKILL", p.name)
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP waits until url answers 200, or the process exits, or 20 s pass.
func waitHTTP(t *testing.T, p *process, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before %s answered:\n%s", p.name, p.err, url, p.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer 200 within 20s (last: %v)", p.name, url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startConvergo runs `convergo serve` on addr over store and waits until it
// is ready.
func startConvergo(t *testing.T, bin, addr, store string) *process {
	t.Helper()
	p := startProcess(t, "convergo serve", bin, "serve",
		"--addr", addr, "--store", store, "--secret", string(secret), "--demo=false", "--log-level", "warn")
	waitHTTP(t, p, "http://"+addr+"/readyz")
	return p
}

// startRedis runs a redis-server of the test's own on addr with dir as its
// working directory, persisting every write to the AOF before answering.
func startRedis(t *testing.T, bin, addr, dir string) *process {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p := startProcess(t, "redis-server", bin,
		"--port", port, "--bind", host, "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--daemonize", "no", "--protected-mode", "no")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pingRedis(addr) == nil {
			return p
		}
		if p.exited() {
			t.Fatalf("redis-server exited (%v):\n%s", p.err, p.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer PING within 20s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pingRedis sends PING and expects +PONG: the server is up and has loaded
// its data (it answers -LOADING until then).
func pingRedis(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("redis answered %q", buf[:n])
	}
	return nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

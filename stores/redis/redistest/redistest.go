// Package redistest starts redis-server processes of a test's own: the
// crashes, restarts and rewinds the Redis store's tests and the clients'
// heal tests inflict cannot be done to a Redis that other tests share.
//
// The binary is named by CONVERGO_REDIS_SERVER_BIN; without it the test is
// skipped, or fails under the README's test command (storetest.Endpoint).
package redistest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/storetest"
)

// EnvServerBin names the redis-server binary private servers run.
const EnvServerBin = "CONVERGO_REDIS_SERVER_BIN"

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 30 * time.Second

// Server is a private redis-server on a free port of the loopback
// address, with its data in Dir. Kill stops it as a crash would; Start
// starts it again on the same port and data.
type Server struct {
	t    testing.TB
	bin  string
	args []string
	cmd  *exec.Cmd
	// Dir holds the server's data files and its log (redis.log).
	Dir string
	// Port is the server's port on 127.0.0.1.
	Port int
}

// Start starts a private redis-server with args after the port, address,
// directory and log file (its persistence, for one: "--save", "",
// "--appendonly", "no" makes a server that comes back empty), and kills
// it when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: storetest.Endpoint(t, EnvServerBin), args: args, Dir: t.TempDir(), Port: freePort(t)}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Addr is the server's address, host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts the server (again, after Kill) and waits until it accepts
// connections.
func (s *Server) Start() {
	s.t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--logfile", filepath.Join(s.Dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.bin, err)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.t.Fatalf("redis-server on %s did not start: %v\n%s", s.Addr(), err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL, as a crash would. Killing a server
// that is not running does nothing.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// freePort is a port the kernel just gave out on the loopback address:
// free now, and outside the fixed ports of the shared services.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

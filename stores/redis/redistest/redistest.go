// Package redistest starts redis-server processes of a test's own: the
// crashes, restarts and rewinds the Redis store's tests and the clients'
// heal tests inflict cannot be done to a Redis that other tests share.
//
// The binary is named by CONVERGO_REDIS_SERVER_BIN; without it the test is
// skipped, or fails under the README's test command (storetest.Endpoint).
//
// # Ports
//
// A server's ports are ones the kernel just gave out on the loopback
// address, free when they were picked but not reserved: until the server
// binds them, another process (a test of a package running at the same
// time, an outgoing connection) may take one. So a server counts as
// started only once it answers INFO as the process started, and a first
// start whose server exits saying an address is in use picks other ports
// and starts again. A cluster node is the case to watch: Redis binds its
// client port first and its cluster bus port after, so a node whose bus
// port is taken accepts connections for a moment and then exits.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/storetest"
)

// EnvServerBin names the redis-server binary private servers run.
const EnvServerBin = "CONVERGO_REDIS_SERVER_BIN"

const (
	// startTimeout bounds how long a server may take to answer.
	startTimeout = 30 * time.Second
	// pickTries bounds how often a first start picks other ports after
	// the server found one taken.
	pickTries = 5
	// addrInUse is what Redis logs when it cannot bind a port.
	addrInUse = "Address already in use"
)

// errPortTaken says that the server exited because a port it was to
// listen on was taken.
var errPortTaken = errors.New("a port of the server is taken")

// Server is a private redis-server on free ports of the loopback address,
// with its data in Dir. Kill stops it as a crash would; Start starts it
// again on the same ports and data.
type Server struct {
	t    testing.TB
	bin  string
	args []string
	cmd  *exec.Cmd
	// exited is closed once cmd has ended and been waited for.
	exited chan struct{}
	// Dir holds the server's data files and its log (redis.log).
	Dir string
	// Port is the server's port on 127.0.0.1.
	Port int
	// BusPort is a cluster node's cluster bus port on 127.0.0.1 (see
	// StartCluster); zero for a server started by Start.
	BusPort int
}

// Start starts a private redis-server with args after the port, address,
// directory and log file (its persistence, for one: "--save", "",
// "--appendonly", "no" makes a server that comes back empty), and kills
// it when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, freePorts, false, args)
}

// StartCluster starts a private redis-server as a Redis Cluster node with
// a cluster bus port of its own (BusPort), and args as Start's. The node
// holds no slot and knows no other node: the test assigns slots and has
// the nodes meet.
func StartCluster(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, freePorts, true, args)
}

// start starts a server on ports from pick, which returns n distinct free
// ports, and picks again when another process took one first.
func start(t testing.TB, pick func(t testing.TB, n int) []int, cluster bool, args []string) *Server {
	t.Helper()
	s := &Server{t: t, bin: storetest.Endpoint(t, EnvServerBin), args: args}
	t.Cleanup(s.Kill)
	for try := 1; ; try++ {
		n := 1
		if cluster {
			n = 2
		}
		ports := pick(t, n)
		s.Port = ports[0]
		if cluster {
			s.BusPort = ports[1]
		}
		// A directory of each try's own: a cluster node that failed may
		// have written its configuration with the ports it did not get.
		s.Dir = t.TempDir()
		err := s.launch(time.Now().Add(startTimeout))
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || try == pickTries {
			t.Fatalf("start redis-server (try %d of %d): %v", try, pickTries, err)
		}
	}
}

// Addr is the server's address, host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts the server again (after Kill), on the same ports and data,
// and waits until it answers. A port another process took while the
// server was down is tried again until startTimeout: it cannot be moved,
// since its clients (and a cluster's other nodes) know it.
func (s *Server) Start() {
	s.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.launch(deadline)
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			s.t.Fatalf("restart redis-server: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launch starts the process and waits until it answers INFO as itself. A
// process that exits first is reported with its log, as errPortTaken when
// it could not bind a port.
func (s *Server) launch(deadline time.Time) error {
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--logfile", s.logPath()}
	if s.BusPort != 0 {
		args = append(args, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(s.BusPort))
	}
	cmd := exec.Command(s.bin, append(args, s.args...)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	for {
		pid, err := serverPID(s.Addr())
		if err == nil && pid == cmd.Process.Pid {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("process %d answers there, not the server started (%d)", pid, cmd.Process.Pid)
		}
		select {
		case <-exited:
			s.cmd = nil
			log := s.log()
			if bytes.Contains(log, []byte(addrInUse)) {
				return fmt.Errorf("%w: redis-server on %s exited:\n%s", errPortTaken, s.Addr(), log)
			}
			return fmt.Errorf("redis-server on %s exited while starting:\n%s", s.Addr(), log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on %s did not answer within %s: %v\n%s", s.Addr(), startTimeout, err, s.log())
		}
	}
}

// serverPID asks the server at addr for its process id (INFO server, which
// Redis answers while it loads its data too).
func serverPID(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return 0, err
	}
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("read INFO: %w", err)
		}
		if strings.HasPrefix(line, "-") {
			return 0, fmt.Errorf("INFO: %s", strings.TrimSpace(line[1:]))
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
}

func (s *Server) logPath() string { return filepath.Join(s.Dir, "redis.log") }

// log is the server's log, or what went wrong reading it.
func (s *Server) log() []byte {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return []byte(err.Error())
	}
	return b
}

// Kill stops the server with SIGKILL, as a crash would. Killing a server
// that is not running does nothing.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// freePorts returns n distinct ports the kernel just gave out on the
// loopback address: free now, and outside the fixed ports of the shared
// services. All n are held until all are picked, so they differ.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

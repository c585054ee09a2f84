package redistest

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// envFake makes the test binary act as a redis-server that listens on its
// --port, answers nothing, and exits after a moment saying an address was
// in use: as Redis does when its cluster bus port is taken, which it
// finds only after it listens on its client port.
const envFake = "REDISTEST_FAKE_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(envFake) != "" {
		os.Exit(fakeServer(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeServer(args []string) int {
	arg := func(name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+arg("--port"))
	if err != nil {
		return 2
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	_ = os.WriteFile(arg("--logfile"), []byte("# Could not create server TCP listening socket: bind: "+addrInUse+"\n"), 0o600)
	return 1
}

// fatalRecorder is a testing.TB whose Fatal ends only the goroutine that
// called it, so that a test can check that a helper failed, and why.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Fatal(args ...any) { r.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// startRecorded runs start on a goroutine of its own and returns the
// server, or nil and the message of the Fatal that ended it.
func startRecorded(t *testing.T, start func(testing.TB) *Server) (*Server, string) {
	t.Helper()
	rec := &fatalRecorder{TB: t}
	var s *Server
	done := make(chan struct{})
	go func() {
		defer close(done)
		s = start(rec)
	}()
	<-done
	return s, rec.fatal
}

// hold listens on a free loopback port until the test ends.
func hold(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// checkAnswers fails unless s is running and answers as itself.
func checkAnswers(t *testing.T, s *Server) {
	t.Helper()
	got, err := serverPID(s.Addr())
	if err != nil {
		t.Fatalf("Start returned, but the server on %s does not answer: %v", s.Addr(), err)
	}
	if s.cmd == nil {
		t.Fatalf("the server on %s is not running", s.Addr())
	}
	if want := s.cmd.Process.Pid; got != want {
		t.Fatalf("the server on %s is process %d, want the one started, %d", s.Addr(), got, want)
	}
}

// A server that listens and then exits while it starts must fail Start,
// with its log, not be handed to the test as started: the test's first
// command would fail with "connection refused".
func TestStartDoesNotReturnAServerThatExited(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvServerBin, self)
	t.Setenv(envFake, "1")
	s, fatal := startRecorded(t, func(t testing.TB) *Server { return Start(t) })
	if s != nil {
		if _, err := serverPID(s.Addr()); err == nil {
			t.Fatalf("the fake answered on %s", s.Addr())
		}
		t.Fatalf("Start returned a server on %s that exited while it started", s.Addr())
	}
	if !strings.Contains(fatal, addrInUse) {
		t.Fatalf("Start failed with %q, want the server's log", fatal)
	}
}

// picker hands out the ports in taken first, then free ones.
func picker(taken ...int) func(testing.TB, int) []int {
	return func(t testing.TB, n int) []int {
		ports := freePorts(t, n)
		for i := range ports {
			if len(taken) > 0 {
				ports[i], taken = taken[0], taken[1:]
			}
		}
		return ports
	}
}

// A first start on a port another process took in the meantime (a
// listener, another test's redis-server) or with a cluster bus port so
// taken starts on other ports, and the server returned is the one
// started.
func TestStartPicksOtherPortsWhenOneIsTaken(t *testing.T) {
	other := Start(t, "--save", "", "--appendonly", "no")
	for _, tc := range []struct {
		name    string
		cluster bool
		taken   []int
	}{
		{"client port held by a listener", false, []int{hold(t)}},
		{"client port held by another redis-server", false, []int{other.Port}},
		{"cluster bus port held", true, []int{hold(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taken := tc.taken
			if tc.cluster {
				taken = append(freePorts(t, 1), tc.taken...)
			}
			s := start(t, picker(taken...), tc.cluster, []string{"--save", "", "--appendonly", "no"})
			checkAnswers(t, s)
			for _, p := range tc.taken {
				if s.Port == p || s.BusPort == p {
					t.Fatalf("started on %d (bus %d), a port that was taken", s.Port, s.BusPort)
				}
			}
			if tc.cluster && s.BusPort == 0 {
				t.Fatal("a cluster node without a bus port")
			}
		})
	}
}

// A server killed and started again answers as the new process, on the
// same port.
func TestKillAndStartAgain(t *testing.T) {
	s := StartCluster(t, "--save", "", "--appendonly", "no")
	checkAnswers(t, s)
	port, bus := s.Port, s.BusPort
	s.Kill()
	if _, err := serverPID(s.Addr()); err == nil {
		t.Fatal("a killed server answers")
	}
	s.Start()
	checkAnswers(t, s)
	if s.Port != port || s.BusPort != bus {
		t.Fatalf("restarted on %d (bus %d), want %d (bus %d)", s.Port, s.BusPort, port, bus)
	}
}

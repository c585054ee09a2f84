package redis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
)

// TestRunsWhileLoading reads the servers' runs from a Redis that is still
// loading its append-only file after a restart. Until it has loaded, Redis
// answers INFO (and SUBSCRIBE, so the store's check runs at once) with
// loading:1 and aof_enabled:0, whatever appendonly says: a run read then
// would be recorded as not fsyncing always, and a restart under
// appendfsync always would start a new epoch of every collection, making
// every reader pull everything again for nothing. The read must fail
// instead, as unavailable, so the check is made again once Redis serves.
func TestRunsWhileLoading(t *testing.T) {
	addr := fakeLoadingRedis(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	s := &Store{client: c}
	runs, err := s.runs(testContext(t))
	if err == nil {
		t.Fatalf("runs while the server loads its data: got %+v and no error, want an error (INFO says loading:1, and aof_enabled:0 until loaded)", runs)
	}
	if got := s.fail(testContext(t), "read the server's run", err); !errors.Is(got, stores.ErrUnavailable) {
		t.Errorf("runs while loading: got %v, want an error wrapping stores.ErrUnavailable", got)
	}
}

// fakeLoadingRedis serves RESP on a loopback port as a Redis 7 with
// appendonly yes and appendfsync always answers while loading its data:
// INFO with loading:1 and aof_enabled:0, CONFIG GET appendfsync always,
// any other command an error.
func fakeLoadingRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	info := "# Server\r\nredis_version:7.0.15\r\nrun_id:3f1c2b0e9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e\r\n\r\n" +
		"# Replication\r\nrole:master\r\nmaster_replid:0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n\r\n" +
		"# Persistence\r\nloading:1\r\nasync_loading:0\r\naof_enabled:0\r\n"
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					args, err := readCommand(r)
					if err != nil {
						return
					}
					var reply string
					switch strings.ToUpper(args[0]) {
					case "INFO":
						reply = "$" + strconv.Itoa(len(info)) + "\r\n" + info + "\r\n"
					case "CONFIG":
						reply = "*2\r\n$11\r\nappendfsync\r\n$6\r\nalways\r\n"
					default:
						reply = "-ERR unknown command '" + args[0] + "'\r\n"
					}
					if _, err := conn.Write([]byte(reply)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("not a command: %q", line)
	}
	args := make([]string, n)
	for i := range args {
		head, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
		if err != nil {
			return nil, fmt.Errorf("not a bulk string: %q", head)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() { commands["fanfloor"] = runFanFloor }

// runFanFloor measures the floor of a fan-out on this machine: no server,
// no WebSocket, no store in the runs; one thread sends a frame of -frame
// bytes (by default the fan-out scenario's for its middle write of as
// many, measured before the runs: fanoutFrame) to each of -subs loopback TCP connections per push,
// -writes pushes -interval apart, with the call the server's direct writes make (sendFrame), and
// the rest of the process reads them with one epoll set while it writes,
// as the fan-out scenario's generator does:
//
//	BENCH_SERVER_CPUS=0 taskset -c 1 convergo-bench fanfloor [-subs 1000] [-writes 50] [-interval 100ms] [-runs 3]
//
// The writing thread pins itself to $BENCH_SERVER_CPUS (the server's core
// in scenario 3) and the reading runs where the process was started (the
// generator's). It prints the writer's CPU per write (its thread's CPU
// time: the system call, and on loopback the receiving socket's TCP
// processing, which the kernel runs in the sender's context) and push →
// arrival at the kernel's receive timestamps, beside the fan-out targets:
// what any server that writes each subscriber's bytes with its own call
// pays at least, on this machine.
//
// The writing thread holds a processor of the Go runtime of its own (one
// more than the process's CPUs give it): with the one a single CPU gives,
// the reading goroutine had none while a push was being written, so no
// socket was read during the writes, unlike the scenario's generator, a
// process of its own that reads while the server writes. That made each
// write cheaper than the server's (the receiving socket's wake-up and
// buffers stayed on the writer's core), by about a third at 10,000
// subscribers (docs/benchmarks.md, "Scenario 3: what the server's write
// costs above the floor's").
func runFanFloor(args []string) error {
	fs := flag.NewFlagSet("fanfloor", flag.ExitOnError)
	subs := fs.Int("subs", 1000, "subscribers (connections)")
	writes := fs.Int("writes", 50, "pushes per run")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between pushes")
	frame := fs.Int("frame", 0, "bytes written per subscriber per push (0: the fan-out scenario's changes frame of its middle write of as many, measured first)")
	runs := fs.Int("runs", 3, "measured runs")
	fs.Parse(args)
	if *frame == 0 {
		n, err := fanoutFrame(context.Background(), *writes/2)
		if err != nil {
			return fmt.Errorf("fanfloor: measure the fan-out frame: %w", err)
		}
		*frame = n
	}
	if *frame < 8 {
		return errors.New("-frame: at least 8 bytes")
	}
	raiseFileLimit()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1))
	title := fmt.Sprintf("Fan-out floor: one send(2) of %d bytes per subscriber, no server, %s subscribers, %s pushes/s",
		*frame, groupThousands(strconv.Itoa(*subs)), strconv.FormatFloat(float64(time.Second)/float64(*interval), 'g', 3, 64)) + loopbackNote()
	for run := range *runs {
		lat, cpu, err := fanFloorRun(*subs, *writes, *interval, *frame)
		if err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
		slices.Sort(lat)
		note := fmt.Sprintf("%d pushes %s apart; %d deliveries", *writes, *interval, *subs**writes)
		if missing := *subs**writes - len(lat); missing > 0 {
			note += fmt.Sprintf(", %d of them without a receive timestamp", missing)
		}
		emit(sample{Scenario: title, Metric: "writer CPU per delivery", Unit: "µs", Better: "lower", Impl: "bare send(2) per subscriber",
			Ours: true, Run: run, Value: cpu.Seconds() * 1e6 / float64(*subs**writes), Note: note})
		for _, q := range []struct {
			name string
			p    float64
		}{{"p50 push→arrival", 0.5}, {"p99 push→arrival", 0.99}, {"max push→arrival", 1}} {
			emit(sample{Scenario: title, Metric: q.name, Unit: "ms", Better: "lower", Impl: "bare send(2) per subscriber",
				Ours: true, Run: run, Value: quantile(lat, q.p), Note: note})
			if t := fanoutTarget("memory", *subs, *interval, nil); t > 0 && q.p == 0.99 {
				emit(sample{Scenario: title, Metric: q.name, Unit: "ms", Better: "lower", Impl: targetImpl, Limit: true, Run: run, Value: t})
			}
		}
	}
	return nil
}

// fanFloorRun is one run of runFanFloor: the latencies (ms) of the
// deliveries that carried a receive timestamp, and the writer's CPU time.
// A run whose reader did not receive every frame is an error.
func fanFloorRun(subs, writes int, interval time.Duration, frame int) ([]float64, time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, err
	}
	defer ln.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	wfd, rfd := make([]int, subs), make([]int, subs)
	fdOf := func(c net.Conn) int {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			return -1
		}
		fd := -1
		rc.Control(func(u uintptr) { fd = int(u) })
		return fd
	}
	for i := range subs {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, 0, fmt.Errorf("dial %d: %w", i, err)
		}
		conns = append(conns, c)
		s, err := ln.Accept()
		if err != nil {
			return nil, 0, err
		}
		conns = append(conns, s)
		wfd[i], rfd[i] = fdOf(s), fdOf(c)
		if err := syscall.SetsockoptInt(rfd[i], syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
			return nil, 0, err
		}
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, 0, err
	}
	defer syscall.Close(epfd)
	for i, fd := range rfd {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, 0, err
		}
	}
	sent := make([]atomic.Int64, writes) // Unix nanoseconds at each push's start
	var lat []float64
	done := make(chan error, 1)
	go func() { // the reader: what the generator does, minus the WebSocket parse
		buf := make([]byte, 64<<10)
		oob := make([]byte, syscall.CmsgSpace(16))
		part := make([]int, subs) // bytes of a frame already read, per connection
		want, got := subs*writes*frame, 0
		events := make([]syscall.EpollEvent, 512)
		for got < want {
			n, err := syscall.EpollWait(epfd, events, 1000)
			if err != nil && err != syscall.EINTR {
				done <- fmt.Errorf("epoll_wait: %w", err)
				return
			}
			for _, ev := range events[:max(n, 0)] {
				i := int(ev.Fd)
				m, oobn, _, _, err := syscall.Recvmsg(rfd[i], buf, oob, 0)
				if err == syscall.EAGAIN || err == syscall.EINTR {
					continue
				}
				if err != nil || m == 0 {
					done <- fmt.Errorf("read of connection %d: %v (end of stream: %t)", i, err, m == 0)
					return
				}
				got += m
				at, ok := rxTimestamp(oob[:oobn])
				// Each frame that starts in this read carries its push's
				// index in its first bytes.
				for off := (frame - part[i]) % frame; off+4 <= m; off += frame {
					k := int(binary.BigEndian.Uint32(buf[off:]))
					if t0 := sent[min(k, writes-1)].Load(); ok && k < writes && t0 > 0 {
						lat = append(lat, float64(at-t0)/1e6)
					}
				}
				part[i] = (part[i] + m) % frame
			}
		}
		done <- nil
	}()
	time.Sleep(300 * time.Millisecond) // receive timestamps are turned on a little after they are asked for

	cpu := make(chan time.Duration, 1)
	var short error // the first send a socket did not take whole
	go func() {
		runtime.LockOSThread() // this thread ends with the goroutine: its affinity goes with it
		if err := pinThread(os.Getenv("BENCH_SERVER_CPUS")); err != nil {
			fmt.Fprintln(os.Stderr, "fanfloor: writer not pinned:", err)
		}
		var t0, t1 unix.Timespec
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0)
		var busy time.Duration
		msg := make([]byte, frame)
		for k := range writes {
			binary.BigEndian.PutUint32(msg, uint32(k))
			sent[k].Store(time.Now().UnixNano())
			for i, fd := range wfd {
				if err := sendFrame(fd, msg); err != nil && short == nil {
					short = fmt.Errorf("push %d to connection %d: %w", k, i, err)
				}
			}
			unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1)
			busy += time.Duration(t1.Nano() - t0.Nano())
			time.Sleep(interval)
			unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0)
		}
		cpu <- busy
	}()
	used := <-cpu
	if short != nil {
		return nil, 0, fmt.Errorf("writer: %w (the reader would wait for it in vain)", short)
	}
	select {
	case err := <-done:
		if err != nil {
			return nil, 0, fmt.Errorf("reader: %w", err)
		}
	case <-time.After(30 * time.Second):
		return nil, 0, errors.New("the reader did not receive every frame within 30 s")
	}
	return lat, used, nil
}

// pinThread sets the calling thread's CPU affinity to cpus, a list such as
// "0" or "0,1" (empty: left alone).
func pinThread(cpus string) error {
	if cpus == "" {
		return nil
	}
	var set unix.CPUSet
	for _, f := range strings.Split(cpus, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("BENCH_SERVER_CPUS %q: %w", cpus, err)
		}
		set.Set(n)
	}
	return unix.SchedSetaffinity(0, &set)
}

// sendFrame sends msg on the non-blocking socket fd with the call the
// server's direct writes make (transport's liveConn.sendNow): one send(2)
// that does not wait, as a raw system call. What a full socket does not
// take is lost: the error says so, and the run fails on it.
func sendFrame(fd int, msg []byte) error {
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(msg))), uintptr(len(msg)),
			syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return fmt.Errorf("send: %w", errno)
		case int(n) < len(msg):
			return fmt.Errorf("send: the socket took %d of %d bytes", n, len(msg))
		}
		return nil
	}
}

package transport

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Listener wraps ln so that it holds at most Limits.MaxConns connections
// in total and Limits.MaxConnsPerAddr from one peer address; a peer in
// Config.TrustedProxies is exempt from the per-address bound (it carries
// many clients; the WebSocket upgrade still counts each behind it by its
// X-Forwarded-For address). A connection over either bound is closed as
// soon as it is accepted, before a byte is read, and counted in
// convergo_conns_refused_total. The slot is freed when the connection is
// closed, whoever closes it (net/http, or a hijacked WebSocket's session).
//
// Serve every listener of the server through it: net/http bounds what one
// request may take (ServeHTTP's deadlines, http.Server's
// ReadHeaderTimeout and IdleTimeout), this bounds how many may wait at
// once. Listeners wrapped by one Server share its bounds.
func (s *Server) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, s: s}
}

type limitListener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection within the bounds, closing those
// beyond them.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, exempt := l.s.peer(c.RemoteAddr())
		if reason := l.s.tcp.admit(addr, exempt); reason != "" {
			l.s.metrics.connsRefused.WithLabelValues(reason).Inc()
			_ = c.Close()
			continue
		}
		l.s.metrics.conns.Inc()
		return &limitConn{Conn: c, release: func() {
			l.s.tcp.leave(addr, exempt)
			l.s.metrics.conns.Dec()
		}}, nil
	}
}

// peer returns the key a connection is counted under (limitKey), and
// whether it is a trusted proxy.
func (s *Server) peer(a net.Addr) (addr string, exempt bool) {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	for _, p := range s.proxies {
		if p.Contains(ip) {
			return ip.String(), true
		}
	}
	return limitKeyOf(ip), false
}

// connLimit counts the connections the server's listeners hold, in total
// and per peer address.
type connLimit struct {
	max   int
	mu    sync.Mutex
	n     int
	peers *keyCounter
}

func newConnLimit(l Limits) *connLimit {
	return &connLimit{max: l.MaxConns, peers: newKeyCounter(l.MaxConnsPerAddr)}
}

// admit takes a slot for a connection from addr, or says which bound
// refuses it: "total" or "addr".
func (l *connLimit) admit(addr string, exempt bool) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.max {
		return "total"
	}
	if !exempt && !l.peers.acquire(addr) {
		return "addr"
	}
	l.n++
	return ""
}

func (l *connLimit) leave(addr string, exempt bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if !exempt {
		l.peers.release(addr)
	}
}

// limitConn frees its slot when first closed.
type limitConn struct {
	net.Conn
	closed  atomic.Bool
	release func()
}

// netConn returns the connection it wraps, whose socket a live session
// may poll (poll_linux.go); closing stays limitConn's.
func (c *limitConn) netConn() net.Conn { return c.Conn }

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.release()
	}
	return err
}

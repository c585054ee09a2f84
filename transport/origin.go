package transport

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"

	"github.com/convergo/convergo/transport/proto"
)

// clientAddr is the address of the client: the peer's, or behind trusted
// proxies the last one they forwarded for.
func (s *Server) clientAddr(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if host == "" {
			return r.RemoteAddr
		}
		return host
	}
	addr := peer.Addr().Unmap()
	if !s.trusted(addr) {
		return addr.String()
	}
	fwd := r.Header.Values("X-Forwarded-For")
	for i := len(fwd) - 1; i >= 0; i-- {
		hops := strings.Split(fwd[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return addr.String() // a garbled header: count the proxy itself
			}
			hop = hop.Unmap()
			if !s.trusted(hop) {
				return hop.String()
			}
			addr = hop
		}
	}
	return addr.String()
}

// v6LimitBits is the prefix an IPv6 client is counted under by the
// per-address limits: a host is commonly given a whole /64, whose
// addresses it can use at will, so counting each address alone would give
// one client 2^64 allowances.
const v6LimitBits = 64

// limitKey is the key a client address is counted under by the
// per-address limits (rate buckets, connections): an IPv4 address itself,
// an IPv6 address's /64. An address that does not parse is its own key.
func limitKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	return limitKeyOf(a)
}

func limitKeyOf(a netip.Addr) string {
	a = a.Unmap()
	if !a.Is6() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(v6LimitBits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkOrigin refuses browser requests from origins that are neither the
// server's own nor allowed, and sets the CORS headers for allowed foreign
// origins.
func (s *Server) checkOrigin(w http.ResponseWriter, r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil // not a browser, or a same-origin GET
	}
	same, ok := s.originAllowed(origin, r.Host)
	if !ok {
		return proto.Errorf(proto.CodeForbidden, "origin %q is not allowed", origin)
	}
	if !same {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", proto.HeaderError+", "+proto.HeaderRetryAfter+", "+proto.HeaderRequestID)
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, "+proto.HeaderProtocol+", "+proto.HeaderRequestID)
			h.Set("Access-Control-Max-Age", "600")
		}
	}
	return nil
}

// originAllowed reports whether a browser page of origin may call the
// server: as the server's own (PublicOrigins, or loopback with the demo),
// or as a foreign origin AllowedOrigins lists (a host pattern, or a
// scheme://host pattern, matched with path.Match against the host with
// its port). The request's Host header plays no part in whether the
// origin is allowed: a DNS-rebinding page controls it.
//
// same says the page needs no CORS headers. With the demo every loopback
// origin is allowed, whatever its port, but only the one the request is
// addressed to (host, its Host header) is the server's own page: another
// port is another origin to the browser (a development server's page
// importing the library from this server), which reads nothing without
// CORS headers. Host decides only that, and the headers are harmless to
// a page that was the server's own after all.
func (s *Server) originAllowed(origin, host string) (same, ok bool) {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false, false
	}
	if s.public[strings.ToLower(u.Scheme+"://"+u.Host)] {
		return true, true
	}
	if s.demo && isLoopback(u.Hostname()) {
		return strings.EqualFold(u.Host, host), true
	}
	for _, p := range s.origins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if m, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); m {
			return false, true
		}
	}
	return false, false
}

// isLoopback reports whether host names this machine: localhost or a
// loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// CORS serves h (static files, such as the browser library at /convergo/)
// to pages of the origins the server allows: an allowed foreign origin gets
// Access-Control-Allow-Origin, so a page there can import the library as a
// module; other origins get the files without it, which browsers refuse to
// use across origins.
func (s *Server) CORS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" {
			if same, ok := s.originAllowed(origin, r.Host); ok && !same {
				w.Header().Set("Access-Control-Allow-Origin", origin)
				w.Header().Add("Vary", "Origin")
			}
		}
		h.ServeHTTP(w, r)
	})
}

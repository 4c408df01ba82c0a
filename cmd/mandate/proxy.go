package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// proxyFlags are serve's settings for running behind a reverse proxy:
// the URL agents reach it at, and the proxies whose X-Forwarded-For it
// believes.
type proxyFlags struct {
	publicURL string
	trusted   prefixList
}

func (p *proxyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.publicURL, "public-url", env("MANDATE_PUBLIC_URL", ""), "with --http, the URL agents reach this server at behind a proxy, e.g. https://mandate.example.com (env MANDATE_PUBLIC_URL): named in the 401 challenge and the protected resource metadata; its host is accepted in Host and Origin")
	fs.Var(&p.trusted, "trusted-proxy", "with --http, a proxy address or CIDR (e.g. 127.0.0.1/32) whose X-Forwarded-For names the client in audit records and per-address limits; repeatable (env MANDATE_TRUSTED_PROXY, comma-separated); default none: X-Forwarded-For is ignored")
}

// proxySettings is proxyFlags checked.
type proxySettings struct {
	public  string // scheme://host[:port], no trailing slash; "" when unset
	host    string // public's host name, lower case
	trusted []netip.Prefix
}

// check validates the flags. A --public-url must be an http(s) URL with a
// host and no path: the protected resource metadata of https://h/mcp lives
// at https://h/.well-known/oauth-protected-resource (RFC 9728), which a
// proxy mounting Mandate under a path prefix would not route to us, so a
// prefix would publish URLs that do not work. Both flags mean nothing
// without --http and are refused there rather than silently ignored.
func (p *proxyFlags) check(httpOn bool) (*proxySettings, error) {
	if env("MANDATE_TRUSTED_PROXY", "") != "" && len(p.trusted) == 0 {
		for _, s := range strings.Split(env("MANDATE_TRUSTED_PROXY", ""), ",") {
			if err := p.trusted.Set(strings.TrimSpace(s)); err != nil {
				return nil, usageError{"serve: MANDATE_TRUSTED_PROXY: " + err.Error()}
			}
		}
	}
	if !httpOn {
		if p.publicURL != "" || len(p.trusted) > 0 {
			return nil, usageError{"serve: --public-url and --trusted-proxy apply only with --http"}
		}
		return &proxySettings{}, nil
	}
	s := &proxySettings{trusted: p.trusted}
	if p.publicURL != "" {
		u, err := url.Parse(p.publicURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, usageError{fmt.Sprintf("serve: --public-url %q must be an http:// or https:// URL of a host, without a path, e.g. https://mandate.example.com (the proxy must pass /mcp and /.well-known/ to this server unchanged)", p.publicURL)}
		}
		s.public = u.Scheme + "://" + u.Host
		s.host = strings.ToLower(u.Hostname())
	}
	return s, nil
}

// base is this server's URL for r: --public-url when set, else the URL
// the client reached it at (baseURL).
func (s *proxySettings) base(r *http.Request, tlsOn bool) string {
	if s != nil && s.public != "" {
		return s.public
	}
	return baseURL(r, tlsOn)
}

// clientAddr puts the client's address in r.RemoteAddr when the request
// came through a --trusted-proxy, so audit records of refusals and the
// per-address limit of those records see clients, not the proxy. The
// client is the rightmost X-Forwarded-For entry that is not itself a
// trusted proxy: entries to its left were written by the client and can
// say anything. From any other peer the header is ignored. Identity is
// never taken from it: only the address in records and limits changes.
func (s *proxySettings) clientAddr(next http.Handler) http.Handler {
	if s == nil || len(s.trusted) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip, ok := s.forwardedFor(r); ok {
			r2 := *r
			r2.RemoteAddr = net.JoinHostPort(ip.String(), "0")
			r = &r2
		}
		next.ServeHTTP(w, r)
	})
}

// forwardedFor is the client address r's X-Forwarded-For names, when the
// peer is a trusted proxy and the header names one.
func (s *proxySettings) forwardedFor(r *http.Request) (netip.Addr, bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !s.isTrusted(peer.Addr()) {
		return netip.Addr{}, false
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	var last netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // not written by a proxy we trust: stop at the last good hop
		}
		ip = ip.Unmap()
		last = ip
		if !s.isTrusted(ip) {
			return ip, true
		}
	}
	return last, last.IsValid()
}

func (s *proxySettings) isTrusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// prefixList is a repeatable flag of addresses or CIDRs.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		a, aerr := netip.ParseAddr(v)
		if aerr != nil {
			return fmt.Errorf("%q is not an IP address or CIDR such as 10.0.0.0/8", v)
		}
		p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	*l = append(*l, p.Masked())
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServePublicURL: behind a proxy, --public-url (not the upstream
// address the request reached) is what the 401 challenge and the
// protected resource metadata name, and on loopback the public host name
// is accepted in Host while other names still get 403.
func TestServePublicURL(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	key := f.key(t, "demo-agent")
	const public = "https://mandate.example.com"
	base, _ := startHTTPProc(t, f, "--public-url", public+"/")

	res := mcpPost(t, base, "")
	if want := `Bearer resource_metadata="` + public + `/.well-known/oauth-protected-resource"`; res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("no key: %d %q, want 401 with %q", res.StatusCode, res.Header.Get("WWW-Authenticate"), want)
	}
	for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Resource string }
		err = json.NewDecoder(res.Body).Decode(&meta)
		res.Body.Close()
		if err != nil || meta.Resource != public+"/mcp" {
			t.Fatalf("GET %s: %+v %v, want resource %s/mcp", path, meta, err, public)
		}
	}
	for _, tt := range []struct {
		host string
		want int
	}{
		{"mandate.example.com", 200},
		{"mandate.example.com:443", 200},
		{"evil.example.com", 403},
	} {
		req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Host = tt.host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("Host %s: %d, want %d", tt.host, res.StatusCode, tt.want)
		}
	}
}

// TestServeProxyFlags: mistakes in --public-url and --trusted-proxy are
// usage errors (exit 2).
func TestServeProxyFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--http", "127.0.0.1:0", "--public-url", "mandate.example.com"}, "--public-url"},
		{[]string{"--http", "127.0.0.1:0", "--public-url", "ftp://mandate.example.com"}, "--public-url"},
		{[]string{"--http", "127.0.0.1:0", "--public-url", "https://example.com/mandate"}, "without a path"},
		{[]string{"--http", "127.0.0.1:0", "--trusted-proxy", "10.0.0.0/33"}, "not an IP address or CIDR"},
		{[]string{"--http", "127.0.0.1:0", "--trusted-proxy", "proxy.local"}, "not an IP address or CIDR"},
		{[]string{"--agent", "demo-agent", "--public-url", "https://m.example.com"}, "apply only with --http"},
		{[]string{"--agent", "demo-agent", "--trusted-proxy", "127.0.0.1"}, "apply only with --http"},
	} {
		_, stderr, status := runBinary(t, append([]string{"serve"}, tt.args...)...)
		if status != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v: exit %d, %q; want 2 and %q", tt.args, status, stderr, tt.want)
		}
	}
}

// TestServeTrustedProxy: refusals are audited with the client address
// from X-Forwarded-For only when the peer is a --trusted-proxy, taking the
// rightmost hop that is not itself trusted (what the client wrote to the
// left of it is ignored); so the per-address limit of refusal records (10
// a minute) counts the clients behind the proxy one by one. Without the
// flag the header changes nothing and all of them are one address.
func TestServeTrustedProxy(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	trusting, _ := startHTTPProc(t, f, "--trusted-proxy", "127.0.0.1/32", "--trusted-proxy", "10.0.0.0/8")
	plain := startHTTP(t, f)

	send := func(base, xff string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer mk_nothing")
		req.Header.Set("X-Forwarded-For", xff)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Fatalf("a bad key got %d, want 401", res.StatusCode)
		}
	}
	addresses := func() []string {
		var out []string
		for _, r := range auditRecords(t, f.db) {
			if r.Tool != "mcp_auth" {
				continue
			}
			var a struct{ Address string }
			_ = json.Unmarshal(r.Args, &a)
			out = append(out, a.Address)
		}
		return out
	}

	// A client that forges a hop, then one behind two proxies.
	send(trusting, "6.6.6.6, 203.0.113.7")
	send(trusting, "203.0.113.8, 10.1.2.3")
	send(plain, "203.0.113.9")
	got := addresses()
	if len(got) != 3 || got[0] != "203.0.113.7:0" || got[1] != "203.0.113.8:0" {
		t.Fatalf("refusals audited with addresses %q, want 203.0.113.7:0 and 203.0.113.8:0 from the trusted proxy first", got)
	}
	if ap, err := netip.ParseAddrPort(got[2]); err != nil || !ap.Addr().IsLoopback() {
		t.Fatalf("without --trusted-proxy the refusal names %q, want the peer's loopback address", got[2])
	}

	// 15 clients behind the proxy: each is its own address, so all are
	// recorded; through the server that ignores the header they are one
	// address, and only the first 10 of theirs are.
	for i := range 15 {
		send(trusting, fmt.Sprintf("198.51.100.%d", i+1))
		send(plain, fmt.Sprintf("198.51.100.%d", i+1))
	}
	var fromClients, fromPeer int
	for _, a := range addresses()[3:] {
		if strings.HasPrefix(a, "198.51.100.") {
			fromClients++
		} else {
			fromPeer++
		}
	}
	// The plain server had already recorded one refusal from 127.0.0.1.
	if fromClients != 15 || fromPeer != 9 {
		t.Fatalf("refusal records: %d with client addresses, %d with the peer's; want 15 and 9 (10 a minute per address)", fromClients, fromPeer)
	}
}

// TestServeHTTPPolicyReloadToolsList: over HTTP, an edit of the policy
// file is reflected by the very next tools/list, and both ways a client
// can hear about it get notifications/tools/list_changed: a 2025-11-25
// client's GET stream and a 2026-07-28 client's subscriptions/listen
// stream. So the listChanged capability the server announces holds over
// HTTP too (for the process the stream is open to).
func TestServeHTTPPolicyReloadToolsList(t *testing.T) {
	t.Parallel()
	f := newHTTPFiles(t)
	key := f.key(t, "lookup-bot")
	base := startHTTP(t, f)

	list := func() []string {
		t.Helper()
		c := connectSDKHTTP(t, base, "2026-07-28", map[string]string{"Authorization": "Bearer " + key})
		return c.tools(t)
	}
	if got := list(); !slices.Equal(got, []string{"get_action_status", "get_order"}) {
		t.Fatalf("lookup-bot tools before the edit: %v", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := openStream(t, ctx, base, key, false)
	modern := openStream(t, ctx, base, key, true)
	// The GET stream has no acknowledgement; the server holds it once its
	// response headers are sent (its session is registered before), which
	// openStream has already seen.
	dropStatusRule(t, f)
	for name, ch := range map[string]<-chan string{"GET (2025-11-25)": old, "subscriptions/listen (2026-07-28)": modern} {
		select {
		case msg, ok := <-ch:
			if !ok || !strings.Contains(msg, "notifications/tools/list_changed") {
				t.Fatalf("%s stream: %q (open %v), want notifications/tools/list_changed", name, msg, ok)
			}
		case <-ctx.Done():
			t.Fatalf("%s stream: no notifications/tools/list_changed after the policy edit", name)
		}
	}
	if got := list(); !slices.Equal(got, []string{"get_order"}) {
		t.Fatalf("lookup-bot tools after the edit: %v, want [get_order]", got)
	}
}

// TestForwardedFor: which X-Forwarded-For entry is the client, for
// peers inside and outside --trusted-proxy.
func TestForwardedFor(t *testing.T) {
	var fl proxyFlags
	for _, c := range []string{"127.0.0.1", "10.0.0.0/8", "fd00::/8"} {
		if err := fl.trusted.Set(c); err != nil {
			t.Fatal(err)
		}
	}
	s, err := fl.check(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		peer string
		xff  []string
		want string // "" when the header must be ignored
	}{
		{"127.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"192.0.2.1:5000", []string{"203.0.113.7"}, ""},                                 // peer not trusted
		{"127.0.0.1:5000", []string{"6.6.6.6, 203.0.113.7"}, "203.0.113.7"},             // client-written hop ignored
		{"127.0.0.1:5000", []string{"6.6.6.6", "203.0.113.7, 10.0.0.9"}, "203.0.113.7"}, // two headers, two proxies
		{"127.0.0.1:5000", []string{"10.0.0.8, 10.0.0.9"}, "10.0.0.8"},                  // all trusted: the leftmost
		{"127.0.0.1:5000", []string{"203.0.113.7, junk"}, ""},                           // the proxy's own hop is not an address
		{"127.0.0.1:5000", []string{"junk, 203.0.113.7"}, "203.0.113.7"},
		{"127.0.0.1:5000", nil, ""},
		{"[::ffff:127.0.0.1]:5000", []string{"2001:db8::1"}, "2001:db8::1"},
		{"[fd00::1]:5000", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"[2001:db8::2]:5000", []string{"203.0.113.7"}, ""},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.peer
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		ip, ok := s.forwardedFor(r)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != tt.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %q, want %q", tt.peer, tt.xff, got, tt.want)
		}
	}
}

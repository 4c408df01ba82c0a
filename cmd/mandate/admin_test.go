package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAdminNetworkFlags(t *testing.T) {
	tests := []struct {
		name                   string
		listen, cert, key, pub string
		insecure               bool
		err                    string
		secure, warn           bool
		host                   string // a host that must be accepted
	}{
		{name: "loopback", listen: "127.0.0.1:8080", host: "localhost"},
		{name: "IPv6 loopback", listen: "[::1]:8080", host: "::1"},
		{name: "localhost", listen: "localhost:8080", host: "127.0.0.1"},
		{name: "every interface without TLS", listen: "0.0.0.0:8080", err: "--insecure-http"},
		{name: "empty host without TLS", listen: ":8080", err: "--insecure-http"},
		{name: "a LAN address without TLS", listen: "10.1.2.3:8080", err: "clear text"},
		{name: "a LAN address, insecure on purpose", listen: "10.1.2.3:8080", insecure: true, warn: true, host: "10.1.2.3"},
		{name: "every interface with TLS", listen: "0.0.0.0:8443", cert: "c.pem", key: "k.pem", secure: true, pub: "https://approvals.example.com", host: "approvals.example.com"},
		{name: "cert without key", listen: "127.0.0.1:8443", cert: "c.pem", err: "both --tls-cert and --tls-key"},
		{name: "https public URL behind a proxy", listen: "127.0.0.1:8080", pub: "https://Approvals.Example.com:8443/", secure: true, host: "approvals.example.com"},
		{name: "http public URL", listen: "127.0.0.1:8080", pub: "http://approvals.internal", host: "approvals.internal"},
		{name: "bad public URL", listen: "127.0.0.1:8080", pub: "ftp://x", err: "--public-url"},
		{name: "bad listen", listen: "8080", err: "HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := adminNetwork(tt.listen, tt.cert, tt.key, tt.pub, tt.insecure)
			if tt.err != "" {
				var ue usageError
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.As(err, &ue) {
					t.Fatalf("error %v, want a usage error mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.secure != tt.secure || n.insecureWarning != tt.warn {
				t.Fatalf("%+v: want secure %v, warning %v", n, tt.secure, tt.warn)
			}
			if !slices.Contains(n.hosts, tt.host) {
				t.Fatalf("hosts %v lack %q", n.hosts, tt.host)
			}
			if slices.Contains(n.hosts, "0.0.0.0") || slices.Contains(n.hosts, "") {
				t.Fatalf("hosts %v accept a wildcard", n.hosts)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes(" 10.0.0.1, 192.168.7.9/16,::1 ")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1/32", "192.168.0.0/16", "::1/128"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := parsePrefixes("10.0.0.1, proxy.example"); err == nil {
		t.Fatal("a host name was taken for an address")
	}
}

func TestAdminRefusesCleartextOnTheNetwork(t *testing.T) {
	db, st, _ := approvalFiles(t)
	_, err := runCLI(t, "", "admin", "--listen", "0.0.0.0:0", "--db", db, "--store", st)
	var ue usageError
	if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), "--insecure-http") {
		t.Fatalf("admin on 0.0.0.0 without TLS: %v, want a usage error naming --insecure-http", err)
	}
}

// selfSigned writes a certificate and key for 127.0.0.1 and returns their
// paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mandate admin test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestAdminServesTLS(t *testing.T) {
	db, st, _ := approvalFiles(t)
	addUsers(t, db, "alice")
	certFile, keyFile, pool := selfSigned(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"admin", "--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile,
			"--public-url", "https://approvals.example.test", "--db", db, "--store", st, "--log-level", "error"}, strings.NewReader(""), pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin exited with %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("admin did not start: %v", err)
	}
	go io.Copy(io.Discard, pr)
	m := regexp.MustCompile(`on (https://[^/ ]+)/`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("admin's first line %q names no https address", line)
	}
	base := m[1]
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(base + "/login")
	if err != nil {
		t.Fatalf("GET over TLS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("GET /login over TLS: %s, TLS %v", resp.Status, resp.TLS != nil)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`).FindStringSubmatch(string(body))
	resp, err = c.PostForm(base+"/login", url.Values{"csrf": {csrf[1]}, "name": {"alice"}, "password": {cliPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var secure bool
	for _, ck := range resp.Cookies() {
		if ck.Name == "mandate_session" {
			secure = ck.Secure
		}
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Fatalf("login over TLS: %s, Secure session cookie %v", resp.Status, secure)
	}
	// The public URL's host is served; another is refused.
	for host, want := range map[string]int{"approvals.example.test": http.StatusOK, "evil.example": http.StatusMisdirectedRequest} {
		req, _ := http.NewRequest("GET", base+"/login", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("Host %s: %s, want %d", host, resp.Status, want)
		}
	}
	// Plain HTTP to the TLS port gets no page.
	plain := strings.Replace(base, "https://", "http://", 1)
	if resp, err := http.Get(plain + "/login"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served the login page on the TLS port")
		}
	}
}

package backend_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mandatehq/mandate/backend"
)

// writeClientCert writes a self-signed client certificate and its key.
func writeClientCert(t *testing.T, dir string) (*x509.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mandate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, certFile, keyFile
}

// TestMutualTLS: ca_file, cert_file and key_file give a client that trusts
// the service's CA and presents Mandate's certificate; without them the
// same service refuses the connection.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	clientCert, _, _ := writeClientCert(t, dir)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) != 1 || r.TLS.PeerCertificates[0].Subject.CommonName != "mandate" {
			t.Errorf("client certificate not presented")
		}
	}))
	pool := x509.NewCertPool()
	pool.AddCert(clientCert)
	hs.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	hs.StartTLS()
	defer hs.Close()
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600)

	getenv := func(string) string { return "tok" }
	mtls := `{ http: { url: "` + hs.URL + `", token_env: T, ca_file: ca.pem, cert_file: client.pem, key_file: client.key } }`
	src := "orders: " + mtls + "\npayments: " + mtls
	cfg, err := backend.ParseConfig(filepath.Join(dir, "b.yaml"), []byte(src), getenv)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.Orders.HTTP.TLS
	resp, err := (&http.Client{Transport: tr}).Get(hs.URL)
	if err != nil {
		t.Fatalf("with ca_file, cert_file and key_file: %v", err)
	}
	resp.Body.Close()

	cfg, err = backend.ParseConfig(filepath.Join(dir, "b.yaml"), []byte(`orders: { http: { url: "`+hs.URL+`", token_env: T, ca_file: ca.pem } }`+"\n"+`payments: { http: { url: "`+hs.URL+`", token_env: T, ca_file: ca.pem } }`), getenv)
	if err != nil {
		t.Fatal(err)
	}
	tr = http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.Orders.HTTP.TLS
	if resp, err := (&http.Client{Transport: tr}).Get(hs.URL); err == nil {
		resp.Body.Close()
		t.Fatalf("without a client certificate the service answered %d; want the handshake refused", resp.StatusCode)
	}
}

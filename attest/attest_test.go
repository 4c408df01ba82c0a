package attest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestLeafData(t *testing.T) {
	got := LeafData(12, []string{"ab", ""})
	want := []byte("\x02\x00\x00\x00\x00\x00\x00\x0012\x02\x00\x00\x00\x00\x00\x00\x00ab\x00\x00\x00\x00\x00\x00\x00\x00")
	if !bytes.Equal(got, want) {
		t.Fatalf("LeafData = %q, want %q", got, want)
	}
	// Length prefixes keep field boundaries: moving a byte across one changes the leaf.
	if bytes.Equal(LeafData(1, []string{"ab", "c"}), LeafData(1, []string{"a", "bc"})) {
		t.Fatal("two splits of the same bytes encode alike")
	}
}

func TestCheckpointSignOpen(t *testing.T) {
	skey, vkey, err := GenerateKey("audit.example.com/log")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k")
	if err := WriteKeyFile(keyFile, skey); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(keyFile, skey); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second WriteKeyFile: %v", err)
	}
	s, err := LoadSigner(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cp := Checkpoint{Origin: s.Name(), Size: 5, Root: bytes.Repeat([]byte{7}, 32)}
	text, err := Sign(cp, s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(text), "audit.example.com/log\n5\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n\n— audit.example.com/log ") {
		t.Fatalf("checkpoint text:\n%s", text)
	}
	// A file listing the key twice and with comments, plus the key itself.
	list := filepath.Join(dir, "keys")
	if err := os.WriteFile(list, []byte("# keys\n\n"+vkey+"\n"+vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	known, err := Verifiers([]string{list, vkey})
	if err != nil {
		t.Fatal(err)
	}
	got, signer, err := Open(text, known)
	if err != nil || got.Size != 5 || !bytes.Equal(got.Root, cp.Root) || got.Origin != cp.Origin || signer != "audit.example.com/log" {
		t.Fatalf("Open = %+v, %q, %v", got, signer, err)
	}
	_, other, _ := GenerateKey("audit.example.com/log")
	otherKnown, _ := Verifiers([]string{other})
	if _, _, err := Open(text, otherKnown); err == nil || !strings.Contains(err.Error(), "not signed by any of the given verifier keys") {
		t.Fatalf("Open with another key: %v", err)
	}
	for _, body := range []string{"o\n5\n", "o\nfive\nBwc=\n", "o\n05\n" + strings.Repeat("A", 44) + "\n", "o\n5\nBwc=\n", "\n5\n" + strings.Repeat("A", 43) + "=\n"} {
		if _, err := ParseBody(body); err == nil {
			t.Errorf("ParseBody(%q) succeeded", body)
		}
	}
	if _, err := Verifiers([]string{filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("Verifiers of a missing file succeeded")
	}
	if _, _, err := GenerateKey("a name"); err == nil {
		t.Fatal("a key name with a space was accepted")
	}
}

// TestOpenOriginIsKeyName: a checkpoint claims a log by its origin line;
// only a key named after that log may vouch for it (C2SP tlog-checkpoint:
// the verifier checks the origin it expects).
func TestOpenOriginIsKeyName(t *testing.T) {
	skey, vkey, err := GenerateKey("staging.example.com/mandate")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	known, err := Verifiers([]string{vkey})
	if err != nil {
		t.Fatal(err)
	}
	text, err := Sign(Checkpoint{Origin: "prod.example.com/mandate", Size: 1, Root: make([]byte, 32)}, s)
	if err != nil {
		t.Fatal(err)
	}
	if cp, signer, err := Open(text, known); err == nil || !strings.Contains(err.Error(), `the checkpoint is of the log "prod.example.com/mandate", but signed by a key named staging.example.com/mandate`) {
		t.Fatalf("Open of a checkpoint of another origin = %+v, %q, %v", cp, signer, err)
	}
	text, err = Sign(Checkpoint{Origin: s.Name(), Size: 1, Root: make([]byte, 32)}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, signer, err := Open(text, known); err != nil || signer != "staging.example.com/mandate" {
		t.Fatalf("Open of its own origin: %q, %v", signer, err)
	}
}

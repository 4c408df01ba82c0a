package attest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is the state of the tree at one size: the C2SP tlog-checkpoint
// body (https://c2sp.org/tlog-checkpoint), signed as a note.
type Checkpoint struct {
	Origin string // who keeps the log; the signing key's name
	Size   uint64 // how many records the tree holds
	Root   []byte // the RFC 6962 root hash of those records
}

// Body is the checkpoint's signed text: origin, size in decimal and the root
// hash in standard base64, one per line.
func (c Checkpoint) Body() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root))
}

// ParseBody reads a checkpoint body. Lines after the third are extensions
// that C2SP allows; they are ignored.
func ParseBody(text string) (Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return Checkpoint{}, errors.New("checkpoint body: want an origin, a size and a root hash, one per line")
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return Checkpoint{}, errors.New("checkpoint body: empty origin line")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("checkpoint body: size %q is not a decimal number", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != Hasher.Size() {
		return Checkpoint{}, fmt.Errorf("checkpoint body: root hash %q is not %d bytes in base64", lines[2], Hasher.Size())
	}
	c.Root = root
	return c, nil
}

// Sign signs c with s and returns the signed note. Ed25519 signatures are
// deterministic, so every process that signs the same tree size with the
// same key writes the same text.
func Sign(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.Body()}, s)
}

// Open checks that text is a checkpoint signed by one of the keys in known,
// by a key named as its origin, and returns it with that key's name.
func Open(text []byte, known note.Verifiers) (Checkpoint, string, error) {
	n, err := note.Open(text, known)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			var by []string
			for _, s := range unverified.Note.UnverifiedSigs {
				by = append(by, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
			}
			if len(by) == 0 {
				return Checkpoint{}, "", errors.New("the checkpoint is not signed")
			}
			return Checkpoint{}, "", fmt.Errorf("the checkpoint is not signed by any of the given verifier keys (it is signed by %s): it comes from another log or another key", strings.Join(by, ", "))
		case errors.As(err, &invalid):
			return Checkpoint{}, "", fmt.Errorf("the checkpoint's signature by %s+%08x does not verify: the checkpoint was altered after signing", invalid.Name, invalid.Hash)
		}
		return Checkpoint{}, "", fmt.Errorf("the checkpoint is not a signed note: %w", err)
	}
	c, err := ParseBody(n.Text)
	if err != nil {
		return Checkpoint{}, "", err
	}
	// The origin names the log, and a log's key is named after it
	// (GenerateKey, and the same name again on rotation): a key of one log
	// must not vouch for a checkpoint claiming to be another's.
	var by []string
	for _, s := range n.Sigs {
		if s.Name == c.Origin {
			return c, s.Name, nil
		}
		by = append(by, s.Name)
	}
	return Checkpoint{}, "", fmt.Errorf("the checkpoint is of the log %q, but signed by a key named %s: a log's checkpoints are signed by keys named after it (its origin)", c.Origin, strings.Join(by, ", "))
}

// GenerateKey makes an Ed25519 signer key named name and its verifier key,
// both in the note package's text form.
func GenerateKey(name string) (signer, verifier string, err error) {
	if name == "" || strings.ContainsAny(name, "+ \t\n") {
		return "", "", errors.New("the key name must be non-empty and have no '+' or spaces; use the log's origin, such as mandate.example.com/audit")
	}
	return note.GenerateKey(rand.Reader, name)
}

// WriteKeyFile writes a signer key to a new file readable only by its
// owner; it never replaces an existing file, which may hold a key in use.
func WriteKeyFile(path, signer string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; it may hold a key in use, so it is not replaced: choose another --out", path)
		}
		return err
	}
	if _, err := f.WriteString(signer + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadSigner reads a signer key file written by WriteKeyFile. Its errors
// never quote the file's content.
func LoadSigner(path string) (note.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	s, err := note.NewSigner(string(bytes.TrimSpace(b)))
	if err != nil {
		return nil, fmt.Errorf("checkpoint key %s: not a signer key written by `mandate audit keygen` (%v)", path, err)
	}
	return s, nil
}

// Verifiers reads verifier keys: each value is a key as `mandate audit
// keygen` prints it, or a file holding such keys, one per line (blank lines
// and lines starting with # are skipped). Several keys let a verifier accept
// checkpoints from before and after a key rotation.
func Verifiers(values []string) (note.Verifiers, error) {
	var list []note.Verifier
	seen := map[string]bool{}
	add := func(key string) error {
		k, err := note.NewVerifier(key)
		if err != nil {
			return err
		}
		if !seen[key] { // the same key twice would make the list ambiguous
			seen[key] = true
			list = append(list, k)
		}
		return nil
	}
	for _, v := range values {
		if add(strings.TrimSpace(v)) == nil {
			continue
		}
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("verifier key %q is neither a key (name+hash+key, as `mandate audit keygen` prints it) nor a readable file: %v", v, err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := add(line); err != nil {
				return nil, fmt.Errorf("%s line %d: not a verifier key: %v", v, i+1, err)
			}
		}
	}
	if len(list) == 0 {
		return nil, errors.New("no verifier key given")
	}
	return note.VerifierList(list...), nil
}

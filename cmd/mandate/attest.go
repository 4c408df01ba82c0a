package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mandatehq/mandate/attest"
	"github.com/mandatehq/mandate/storage"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
)

// The attestation commands of the audit group (docs/attestation.md): keys,
// signed checkpoints, proof bundles and their offline check. The
// checkpointer that serve runs is in checkpointer.go.

const attestUsage = `  mandate audit keygen --name NAME [--out FILE]
      write a checkpoint signer key (mode 0600) and print its verifier key
  mandate audit checkpoint [--db FILE] [--key FILE]
      print the latest signed checkpoint, or with --key sign one now
  mandate audit prove --action ID [--checkpoint FILE] [--since-checkpoint OLD] [--out FILE] [--db FILE]
      write a proof bundle: the action's records, proven in a signed checkpoint;
      with --since-checkpoint (--action then optional), also the proof that
      this checkpoint extends OLD, an older one the reader holds
  mandate audit verify-proof --key VERIFIER_KEY [--key …] [--since-checkpoint OLD] BUNDLE
      check a proof bundle offline, with nothing but the verifier key(s) and,
      with --since-checkpoint, that nothing OLD covers was removed or rewritten
`

// keyList is a repeatable --key flag: verifier keys, or files of them.
type keyList []string

func (k *keyList) String() string     { return strings.Join(*k, ",") }
func (k *keyList) Set(s string) error { *k = append(*k, s); return nil }

func keysFlag(fs *flag.FlagSet) *keyList {
	k := &keyList{}
	if v := os.Getenv("MANDATE_VERIFIER_KEY"); v != "" {
		*k = append(*k, v)
	}
	fs.Var(k, "key", "a verifier `KEY` as mandate audit keygen prints it, or a file of them one per line; repeat it to accept several (before and after a rotation) (env MANDATE_VERIFIER_KEY)")
	return k
}

func (k *keyList) verifiers(cmd string) (note.Verifiers, error) {
	if len(*k) == 0 {
		return nil, usageError{cmd + ": give the verifier key with --key (the line `mandate audit keygen` printed), or a file of keys"}
	}
	return attest.Verifiers(*k)
}

func runAuditKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit keygen", "mandate audit keygen --name NAME [--out FILE]", stderr)
	name := fs.String("name", "", "the key's name, which is also the origin line of every checkpoint it signs: a stable name for this audit log, such as mandate.example.com/audit")
	out := fs.String("out", "checkpoint.key", "the signer key file to create (mode 0600); an existing file is never replaced")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *name == "" {
		return usageError{"audit keygen: give --name, a stable name for this log such as mandate.example.com/audit"}
	}
	skey, vkey, err := attest.GenerateKey(*name)
	if err != nil {
		return usageError{"audit keygen: " + err.Error()}
	}
	if err := attest.WriteKeyFile(*out, skey); err != nil {
		return fmt.Errorf("audit keygen: %w", err)
	}
	fmt.Fprintf(stderr, "wrote the signer key to %s: keep it secret and outside the database (mandate serve --checkpoint-key %s).\nGive auditors the verifier key below; it can only check signatures.\n", *out, *out)
	fmt.Fprintln(stdout, vkey)
	return nil
}

// signCheckpoint signs the tree as it is now and stores the checkpoint. It
// refuses a tree that does not extend the last checkpoint stored for the
// key's origin: signing it would put two histories under one key.
func signCheckpoint(ctx context.Context, db *storage.DB, s note.Signer) ([]byte, attest.Checkpoint, error) {
	size, err := db.TreeSize(ctx)
	if err != nil {
		return nil, attest.Checkpoint{}, err
	}
	root, err := db.TreeRoot(ctx, size)
	if err != nil {
		return nil, attest.Checkpoint{}, err
	}
	cp := attest.Checkpoint{Origin: s.Name(), Size: size, Root: root}
	if err := db.ExtendsLastCheckpoint(ctx, cp.Origin, size, root); err != nil {
		var ext *storage.ExtendError
		if errors.As(err, &ext) {
			err = fmt.Errorf("refusing to sign a checkpoint of %d records: %w; check the trail with `mandate audit verify --since-checkpoint` and the last published checkpoint", size, err)
		}
		return nil, cp, err
	}
	text, err := attest.Sign(cp, s)
	if err != nil {
		return nil, cp, err
	}
	return text, cp, db.SaveCheckpoint(ctx, cp.Origin, cp.Size, cp.Root, string(text))
}

func runAuditCheckpoint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit checkpoint", "mandate audit checkpoint [--db FILE] [--key SIGNER_KEY_FILE]", stderr)
	dbPath := dbFlag(fs)
	keyFile := fs.String("key", "", "sign a checkpoint of the trail as it is now with this signer key file, store it and print it")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	var signer note.Signer
	if *keyFile != "" {
		var err error
		if signer, err = attest.LoadSigner(*keyFile); err != nil {
			return err
		}
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	if signer != nil {
		text, _, err := signCheckpoint(ctx, db, signer)
		if err != nil {
			return err
		}
		_, err = stdout.Write(text)
		return err
	}
	c, err := db.LatestCheckpoint(ctx, "")
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, c.Note)
	return err
}

// unverifiedCheckpoint reads a checkpoint's body without checking its
// signature: prove only needs its size and root, and the reader of the
// bundle checks the signature.
func unverifiedCheckpoint(text []byte) (attest.Checkpoint, error) {
	i := bytes.Index(text, []byte("\n\n"))
	if i < 0 {
		return attest.Checkpoint{}, errors.New("not a signed checkpoint: no blank line before the signatures")
	}
	return attest.ParseBody(string(text[:i+1]))
}

func runAuditProve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit prove", "mandate audit prove --action ID [--checkpoint FILE] [--since-checkpoint OLD] [--out FILE] [--db FILE]", stderr)
	dbPath := dbFlag(fs)
	action := fs.String("action", "", "the action whose records to prove")
	cpFile := fs.String("checkpoint", "", "prove against this signed checkpoint (e.g. one published earlier); default: the latest stored")
	since := fs.String("since-checkpoint", "", "also prove that the bundle's checkpoint extends this older one (the reader's copy, e.g. published last week); --action is then optional")
	out := fs.String("out", "", "write the bundle to this file instead of stdout")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *action == "" && *since == "" {
		return usageError{"audit prove: give --action ID, or --since-checkpoint FILE, or both"}
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var text []byte
	if *cpFile != "" {
		if text, err = os.ReadFile(*cpFile); err != nil {
			return fmt.Errorf("audit prove: %w", err)
		}
	} else {
		c, err := db.LatestCheckpoint(ctx, "")
		if err != nil {
			return err
		}
		text = []byte(c.Note)
	}
	cp, err := unverifiedCheckpoint(text)
	if err != nil {
		return fmt.Errorf("audit prove: %w", err)
	}
	if root, err := db.TreeRoot(ctx, cp.Size); err != nil {
		return fmt.Errorf("audit prove: the checkpoint covers %d records: %w", cp.Size, err)
	} else if !bytes.Equal(root, cp.Root) {
		return fmt.Errorf("audit prove: the checkpoint's root for %d records is not this trail's: it is from another log, or the trail was rewritten since (run `mandate audit verify --since-checkpoint`)", cp.Size)
	}
	b := attest.Bundle{Format: attest.BundleFormat, Checkpoint: string(text), Entries: []attest.Entry{}}
	if *since != "" {
		if b.Consistency, err = consistencySince(ctx, db, *since, cp); err != nil {
			return err
		}
	}
	if *action == "" {
		return writeBundle(&b, *out, stdout, stderr, fmt.Sprintf("the proof that the checkpoint of %d records extends %s", cp.Size, *since))
	}
	// Exact: by the chained rows, not the derived index, which an edit
	// could make hide one of the action's records from the bundle.
	err = db.Records(ctx, storage.Filter{ActionID: *action, Exact: true}, func(r *storage.Record) error {
		if r.LeafIndex() >= cp.Size {
			return fmt.Errorf("audit prove: record %d of action %s is newer than the checkpoint, which covers %d records: wait for the next checkpoint, or sign one with `mandate audit checkpoint --key FILE`", r.Seq, *action, cp.Size)
		}
		var rec bytes.Buffer
		if err := newEncoder(&rec).Encode(r); err != nil {
			return err
		}
		p, err := db.InclusionProof(ctx, r.LeafIndex(), cp.Size)
		if err != nil {
			return err
		}
		// The proof comes from stored nodes, which a database writer can
		// damage; check it here rather than hand the auditor a bundle
		// that fails on their side for reasons nobody can see.
		if err := proof.VerifyInclusion(attest.Hasher, r.LeafIndex(), cp.Size, attest.LeafHash(r.LeafData()), p, cp.Root); err != nil {
			return fmt.Errorf("audit prove: the stored Merkle tree gives record %d a proof that does not lead to the checkpoint's root: the record was rewritten, or the stored tree (merkle_nodes) was damaged (run `mandate audit verify --since-checkpoint FILE`; docs/attestation.md, \"Where it is kept\")", r.Seq)
		}
		b.Entries = append(b.Entries, attest.Entry{LeafIndex: r.LeafIndex(), Record: bytes.TrimSpace(rec.Bytes()), Inclusion: attest.EncodeProof(p)})
		return nil
	})
	if err != nil {
		return err
	}
	if len(b.Entries) == 0 {
		return fmt.Errorf("audit prove: no audit records for action %q", *action)
	}
	what := fmt.Sprintf("%d records of action %s, proven in the checkpoint of %d records", len(b.Entries), *action, cp.Size)
	if b.Consistency != nil {
		what += ", and the proof that it extends " + *since
	}
	return writeBundle(&b, *out, stdout, stderr, what)
}

// consistencySince checks that the trail's tree at the size of old (a
// checkpoint file the reader holds) still has old's root, and returns the
// consistency proof from it to cp. A trail that no longer extends old gets
// an error here; a bundle made anyway could not pass verify-proof.
func consistencySince(ctx context.Context, db *storage.DB, file string, cp attest.Checkpoint) (*attest.Consistency, error) {
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("audit prove: %w", err)
	}
	old, err := unverifiedCheckpoint(text)
	if err != nil {
		return nil, fmt.Errorf("audit prove: %s: %w", file, err)
	}
	if old.Size > cp.Size {
		return nil, fmt.Errorf("audit prove: %s covers %d records, more than the checkpoint proven against (%d): prove against a newer one (--checkpoint), or the trail was cut (run `mandate audit verify --since-checkpoint %s`)", file, old.Size, cp.Size, file)
	}
	if root, err := db.TreeRoot(ctx, old.Size); err != nil || !bytes.Equal(root, old.Root) {
		return nil, fmt.Errorf("audit prove: the trail's first %d records no longer hash to the root of %s: it is from another log, or the trail was rewritten since (run `mandate audit verify --since-checkpoint %s`)", old.Size, file, file)
	}
	p, err := db.ConsistencyProof(ctx, old.Size, cp.Size)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyConsistency(attest.Hasher, old.Size, cp.Size, p, old.Root, cp.Root); err != nil {
		return nil, fmt.Errorf("audit prove: the stored Merkle tree gives a consistency proof from %d to %d records that does not verify: the stored tree (merkle_nodes) was damaged (docs/attestation.md, \"Where it is kept\")", old.Size, cp.Size)
	}
	return &attest.Consistency{FromSize: old.Size, Proof: attest.EncodeProof(p)}, nil
}

// writeBundle writes b indented to out (owner-only: full records, personal
// data included) or to stdout, and says what it wrote on stderr.
func writeBundle(b *attest.Bundle, out string, stdout, stderr io.Writer, what string) error {
	w := stdout
	if out != "" {
		f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("audit prove: %w", err)
		}
		defer f.Close()
		// An existing file keeps its mode through OpenFile: narrow it
		// before anything is written.
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("audit prove: %w", err)
		}
		w = f
	}
	enc := newEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(b); err != nil {
		return err
	}
	if out != "" {
		fmt.Fprintf(stderr, "wrote %s to %s\n", what, out)
	}
	return nil
}

func runAuditVerifyProof(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify-proof", "mandate audit verify-proof --key VERIFIER_KEY [--key …] [--since-checkpoint OLD] BUNDLE", stderr)
	keys := keysFlag(fs)
	since := fs.String("since-checkpoint", "", "also check that the bundle's checkpoint extends this older signed checkpoint you hold: nothing it covers was removed or rewritten since")
	file, err := parseOne(fs, args, "proof bundle file (- for stdin)")
	if err != nil {
		return err
	}
	known, err := keys.verifiers("audit verify-proof")
	if err != nil {
		return err
	}
	var raw []byte
	if file == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("audit verify-proof: %w", err)
	}
	var b attest.Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("audit verify-proof: %s is not a proof bundle: %v", file, err)
	}
	cp, signer, err := attest.VerifyBundle(&b, known, storage.ExportedLeaf)
	if err != nil {
		return fmt.Errorf("audit verify-proof: FAILED: %w", err)
	}
	if b.Consistency != nil && *since == "" {
		// Checked only against the reader's own copy of the older
		// checkpoint: passing over it would say nothing, and exit 0.
		return usageError{fmt.Sprintf("audit verify-proof: the bundle holds a proof that its checkpoint extends an older one of %d records, which only your own copy of that checkpoint can check: give it with --since-checkpoint FILE", b.Consistency.FromSize)}
	}
	if *since != "" {
		text, err := os.ReadFile(*since)
		if err != nil {
			return fmt.Errorf("audit verify-proof: %w", err)
		}
		old, oldSigner, err := attest.Open(text, known)
		if err != nil {
			return fmt.Errorf("audit verify-proof: FAILED: %s: %w", *since, err)
		}
		if err := attest.VerifyConsistency(&b, old, cp); err != nil {
			return fmt.Errorf("audit verify-proof: FAILED: %w", err)
		}
		fmt.Fprintf(stdout, "ok: the audit log %s's checkpoint of %d records extends yours of %d records (signed by %s): nothing recorded before it was removed or rewritten\n",
			cp.Origin, cp.Size, old.Size, oldSigner)
	}
	if len(b.Entries) == 0 {
		return nil
	}
	// prove writes the records of one action; the line below says whose.
	var action string
	for i, e := range b.Entries {
		var r storage.Record
		if err := json.Unmarshal(e.Record, &r); err != nil {
			return fmt.Errorf("audit verify-proof: FAILED: entry %d: %v", i+1, err)
		}
		if i > 0 && r.ActionID != action {
			return fmt.Errorf("audit verify-proof: FAILED: entry %d is a record of action %q, entry 1 of %q: a bundle from `mandate audit prove` holds the records of one action", i+1, r.ActionID, action)
		}
		action = r.ActionID
	}
	fmt.Fprintf(stdout, "ok: %d records of action %s are in the audit log %s, in its checkpoint of %d records (root %s) signed by %s\n",
		len(b.Entries), action, cp.Origin, cp.Size, base64.StdEncoding.EncodeToString(cp.Root), signer)
	return nil
}

// sinceCheckpoint is the older signed checkpoint `audit verify
// --since-checkpoint` compares the trail with, opened before anything is
// verified so that a missing --key or an unreadable file is said at once.
type sinceCheckpoint struct {
	cp     attest.Checkpoint
	signer string
}

// openSinceCheckpoint reads file and checks its signature with keys.
func openSinceCheckpoint(file string, keys *keyList) (*sinceCheckpoint, error) {
	known, err := keys.verifiers("audit verify --since-checkpoint")
	if err != nil {
		return nil, err
	}
	text, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("audit verify: %w", err)
	}
	cp, signer, err := attest.Open(text, known)
	if err != nil {
		return nil, fmt.Errorf("audit verify: %s: %w", file, err)
	}
	return &sinceCheckpoint{cp, signer}, nil
}

// verifySinceCheckpoint proves that the trail as stored now extends an
// older signed checkpoint (storage.CheckExtends).
func verifySinceCheckpoint(ctx context.Context, db *storage.DB, since *sinceCheckpoint, stdout io.Writer) error {
	cp, signer := since.cp, since.signer
	n, err := db.CheckExtends(ctx, cp.Size, cp.Root)
	var ext *storage.ExtendError
	if errors.As(err, &ext) {
		fmt.Fprintf(stdout, "not extended: checkpoint of %s at size %d (signed by %s): %s\n", cp.Origin, cp.Size, signer, ext.Reason)
		return fmt.Errorf("audit verify: the trail does not extend the checkpoint at size %d", cp.Size)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: the trail of %d records extends the checkpoint of %s at size %d signed by %s (consistency proof verified; records 1 to %d recomputed from the rows match its root)\n",
		n, cp.Origin, cp.Size, signer, cp.Size)
	return nil
}

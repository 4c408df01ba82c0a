package storage

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestAuditCredential: the credential column is stored, read back,
// exported (JSON and CSV) and covered by the hash; a record without it
// hashes exactly as before the column existed.
func TestAuditCredential(t *testing.T) {
	ctx := context.Background()
	db, _ := vtChain(t) // 8 records without a credential
	withCred := []*Record{
		{Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`), Decision: "allow", Phase: PhaseAttempt, Credential: "key:0123456789ab"},
		{Agent: "demo-agent", Tool: "refund_order", Args: json.RawMessage(`{}`), Decision: "allow", Phase: PhaseOutcome, Credential: "jwt:tok-1"},
		{Agent: "alice", Tool: "refund_order", Phase: PhaseApproval, Approver: "alice", Comment: "ok"},
	}
	for _, r := range withCred {
		if err := db.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Verify(ctx); err != nil {
		t.Fatalf("Verify with credentials: %v", err)
	}
	recs := readAll(t, db, Filter{})
	if len(recs) != 11 {
		t.Fatalf("%d records, want 11", len(recs))
	}
	for i, r := range recs {
		want := ""
		if i >= 8 {
			want = withCred[i-8].Credential
		}
		if r.Credential != want {
			t.Fatalf("seq %d credential %q, want %q", r.Seq, r.Credential, want)
		}
		if want == "" && r.Approver == "" {
			// Exactly the pre-column hash: old chains still verify.
			if h := hashRecord(r.PrevHash, r.Seq, r.fields()); h != r.Hash {
				t.Fatalf("seq %d without a credential hashes differently from before the column", r.Seq)
			}
		}
		b, _ := json.Marshal(r)
		if !strings.Contains(string(b), `"credential":"`+want+`"`) {
			t.Fatalf("JSON export of seq %d lacks its credential: %s", r.Seq, b)
		}
		if row := r.CSVRow(); len(row) != len(CSVHeader) || row[slices.Index(CSVHeader, "credential")] != want {
			t.Fatalf("CSV row of seq %d: %v", r.Seq, row)
		}
	}

	// The credential is two more hashed fields, so it cannot pass for an
	// approver and comment, nor be added, changed or removed unseen.
	a := Record{Agent: "x", Credential: "v"}
	b := Record{Agent: "x", Approver: "credential", Comment: "v"}
	c := Record{Agent: "x", Comment: "credential", Credential: "v"}
	if hashRecord(genesis, 1, a.hashed()) == hashRecord(genesis, 1, b.hashed()) ||
		hashRecord(genesis, 1, a.hashed()) == hashRecord(genesis, 1, c.hashed()) {
		t.Fatal("a credential hashes like an approver/comment pair")
	}
	for _, tt := range []struct {
		name, stmt string
		seq        int64
	}{
		{"change", `UPDATE audit SET credential = 'key:ffffffffffff' WHERE seq = 9`, 9},
		{"remove", `UPDATE audit SET credential = '' WHERE seq = 10`, 10},
		{"add", `UPDATE audit SET credential = 'key:0123456789ab' WHERE seq = 3`, 3},
		{"add to an approval", `UPDATE audit SET credential = 'jwt:x' WHERE seq = 11`, 11},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := vtChain(t)
			for _, r := range withCred {
				r := *r
				if err := db.Append(ctx, &r); err != nil {
					t.Fatal(err)
				}
			}
			vtTamper(t, db, tt.stmt)
			_, err := db.Verify(ctx)
			var ce *ChainError
			if !errors.As(err, &ce) || ce.Seq != tt.seq || !strings.HasPrefix(ce.Reason, "edited:") {
				t.Fatalf("Verify after %s = %v, want seq %d edited", tt.stmt, err, tt.seq)
			}
		})
	}
}

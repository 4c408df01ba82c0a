package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
)

// demoData is the scenario's store: 20 customers with valid contact
// details and 5 paid USD orders (testdata/remediate-store.json). The
// embedded demo data has enough customers but not enough paid USD orders;
// its phone numbers written with spaces are reverted like any other (see
// TestRemediateDemoPhone).
type demoData struct {
	Customers []struct {
		ID, Email, Phone string
	} `json:"customers"`
	Orders []struct {
		ID, Currency, Total, Refunded, Status string
		CustomerID                            string `json:"customer_id"`
	} `json:"orders"`
}

const scenarioStore = "testdata/remediate-store.json"

func readDemo(t *testing.T) demoData {
	t.Helper()
	var d demoData
	if err := json.Unmarshal(mustRead(t, scenarioStore), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Customers) < 20 {
		t.Fatalf("the demo data has %d customers; the scenario needs 20", len(d.Customers))
	}
	return d
}

func customerNow(t *testing.T, c *client.Client, id string) customerView {
	t.Helper()
	res := call(t, c, "get_customer", map[string]any{"customer_id": id})
	if res.IsError {
		t.Fatalf("get_customer %s: %s", id, text(res))
	}
	var v customerView
	decode(t, res, &v)
	return v
}

// TestRemediateScenario is issue 13's script: a misbehaving agent changes
// the email of 20 customers (each approved by a person, as the policy
// requires), the phone of 10 and refunds 5 orders; another agent changes 2
// of those emails again. The dry run lists exactly the other 28 changes to
// revert, the 2 as skipped and the 5 refunds with their references as not
// reversible; two concurrent --apply runs revert each once; running again,
// alone and twice at once, reverts nothing more; the chain verifies.
func TestRemediateScenario(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db")
	if out, _, err := runMandate(t, nil, "store", "import", "--store", storePath, scenarioStore); err != nil {
		t.Fatalf("store import: %v\n%s", err, out)
	}
	bad := startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AGENT=demo-agent"}, "--db", dbPath, "--store", storePath)
	fixer := startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AGENT=senior-bot"}, "--db", dbPath, "--store", storePath)
	addUsers(t, dbPath, "alice", "bob")
	pw := []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword}
	demo := readDemo(t)

	act := func(c *client.Client, args map[string]any) actionResult {
		t.Helper()
		var r actionResult
		decode(t, call(t, c, "update_account", args), &r)
		return r
	}
	original := map[string]customerView{}
	var emailIDs, phoneIDs, refundIDs []string
	for i, cu := range demo.Customers[:20] {
		original[cu.ID] = customerNow(t, bad, cu.ID)
		r := act(bad, map[string]any{"customer_id": cu.ID, "field": "email", "value": fmt.Sprintf("victim%02d@attacker.example", i), "reason": "customer asked"})
		if r.Status != storage.StatusPending {
			t.Fatalf("email change %d: %+v, want pending (the policy asks a person)", i, r)
		}
		if out, _, err := runMandate(t, pw, "approvals", "approve", r.ActionID, "--as", "bob", "--db", dbPath, "--store", storePath); err != nil {
			t.Fatalf("approving %s: %v\n%s", r.ActionID, err, out)
		}
		emailIDs = append(emailIDs, r.ActionID)
	}
	for i, cu := range demo.Customers[:10] {
		r := act(bad, map[string]any{"customer_id": cu.ID, "field": "phone", "value": fmt.Sprintf("+1555000%04d", i), "reason": "customer asked"})
		if r.Status != storage.StatusExecuted {
			t.Fatalf("phone change %d: %+v, want executed", i, r)
		}
		phoneIDs = append(phoneIDs, r.ActionID)
	}
	for _, o := range demo.Orders {
		if len(refundIDs) == 5 {
			break
		}
		if o.Currency != "USD" || o.Refunded != "0.00" {
			continue
		}
		var r actionResult
		decode(t, call(t, bad, "refund_order", map[string]any{"order_id": o.ID, "amount": "1.00", "reason": "goodwill"}), &r)
		switch r.Status {
		case storage.StatusExecuted:
		case storage.StatusPending:
			if out, _, err := runMandate(t, pw, "approvals", "approve", r.ActionID, "--as", "alice", "--db", dbPath, "--store", storePath); err != nil {
				t.Fatalf("approving refund %s: %v\n%s", r.ActionID, err, out)
			}
		default:
			continue
		}
		refundIDs = append(refundIDs, r.ActionID)
	}
	if len(refundIDs) != 5 {
		t.Fatalf("made %d refunds, want 5", len(refundIDs))
	}
	// Someone else changes two of those emails again.
	for i, cu := range demo.Customers[:2] {
		if r := act(fixer, map[string]any{"customer_id": cu.ID, "field": "email", "value": fmt.Sprintf("fixed%d@example.com", i), "reason": "confirmed by phone"}); r.Status != storage.StatusExecuted {
			t.Fatalf("senior-bot's email change: %+v", r)
		}
	}

	// Lineage per customer: each of the agent's changes with its before
	// and after, and the approver of each email change.
	for i, cu := range demo.Customers[:20] {
		lin, _, err := runMandate(t, nil, "lineage", "--customer", cu.ID, "--db", dbPath)
		if err != nil {
			t.Fatalf("lineage --customer %s: %v", cu.ID, err)
		}
		want := []string{
			fmt.Sprintf(`changed: email %q -> "victim%02d@attacker.example"`, original[cu.ID].Email, i),
			"(" + emailIDs[i], "by bob (approver)",
		}
		if i < 10 {
			want = append(want, fmt.Sprintf(`changed: phone %q -> "+1555000%04d"`, original[cu.ID].Phone, i), "("+phoneIDs[i])
		}
		for _, w := range want {
			if !strings.Contains(lin, w) {
				t.Fatalf("lineage --customer %s lacks %s:\n%s", cu.ID, w, lin)
			}
		}
	}
	remediate := func(extra ...string) (string, error) {
		args := append([]string{"remediate", "--agent", "demo-agent", "--since", "1h", "--db", dbPath, "--store", storePath}, extra...)
		out, errOut, err := runMandate(t, pw, args...)
		return out + errOut, err
	}
	out, err := remediate("--format", "json")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	var plan tools.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("dry run JSON: %v\n%s", err, out)
	}
	ids := func(items []tools.PlanItem) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.ActionID)
		}
		slices.Sort(out)
		return out
	}
	wantRevert := slices.Sorted(slices.Values(append(append([]string(nil), emailIDs[2:]...), phoneIDs...)))
	if got := ids(plan.Revert); !slices.Equal(got, wantRevert) {
		t.Fatalf("to revert: %d %v\nwant the %d changes nobody changed since %v\n%s", len(got), got, len(wantRevert), wantRevert, out)
	}
	if got, want := ids(plan.Skipped), slices.Sorted(slices.Values(emailIDs[:2])); !slices.Equal(got, want) {
		t.Fatalf("skipped %v, want %v", got, want)
	}
	for _, it := range plan.Skipped {
		if !strings.Contains(it.Why, "changed again since by senior-bot") {
			t.Fatalf("skipped %s because %q", it.ActionID, it.Why)
		}
	}
	if got, want := ids(plan.NotReversible), slices.Sorted(slices.Values(refundIDs)); !slices.Equal(got, want) {
		t.Fatalf("not reversible %v, want the refunds %v", got, want)
	}
	for _, it := range plan.NotReversible {
		if it.OrderID == "" || it.Ref == "" {
			t.Fatalf("refund %s listed without its references: %+v", it.ActionID, it)
		}
	}
	// One more email change, left waiting: not in the plan, but listed to deny.
	waiting := act(bad, map[string]any{"customer_id": demo.Customers[19].ID, "field": "email", "value": "again@attacker.example", "reason": "customer asked"})
	if waiting.Status != storage.StatusPending {
		t.Fatalf("waiting change: %+v", waiting)
	}
	if text, err := remediate(); err != nil || !strings.Contains(text, "Dry run: nothing was changed") || !strings.Contains(text, "Not reversible by Mandate") ||
		!strings.Contains(text, "Still waiting for a person (1)") || !strings.Contains(text, waiting.ActionID) {
		t.Fatalf("text dry run: %v\n%s", err, text)
	}

	// Without credentials, or as someone the rules do not let, nothing happens.
	if out, _, err := runMandate(t, nil, "remediate", "--agent", "demo-agent", "--since", "1h", "--db", dbPath, "--store", storePath, "--apply", "--as", "alice"); err == nil {
		t.Fatalf("apply without a password succeeded:\n%s", out)
	}

	// Two applies at once revert each change exactly once.
	concurrently := func() []string {
		var wg sync.WaitGroup
		outs := make([]string, 2)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, err := remediate("--apply", "--as", "alice")
				if err != nil {
					o += "\nerror: " + err.Error()
				}
				outs[i] = o
			}()
		}
		wg.Wait()
		return outs
	}
	outs := concurrently()
	t.Logf("first concurrent apply:\n%s\nsecond:\n%s", outs[0], outs[1])
	for i, o := range outs {
		// A revert the other run made is reported as made or in
		// progress, never as failed (which also gave its claim back).
		if !strings.Contains(o, ", failed 0\n") || strings.Contains(o, "error:") {
			t.Errorf("concurrent apply %d reported failures", i+1)
		}
	}
	reverts := revertActions(t, dbPath)
	if len(reverts) != len(wantRevert) {
		t.Fatalf("%d reverts after two concurrent applies, want %d\n%s\n%s", len(reverts), len(wantRevert), outs[0], outs[1])
	}
	for i, cu := range demo.Customers[:20] {
		now := customerNow(t, fixer, cu.ID)
		wantEmail := original[cu.ID].Email
		if i < 2 {
			wantEmail = fmt.Sprintf("fixed%d@example.com", i)
		}
		if now.Email != wantEmail {
			t.Fatalf("%s email = %q, want %q", cu.ID, now.Email, wantEmail)
		}
		if i < 10 && now.Phone != original[cu.ID].Phone {
			t.Fatalf("%s phone = %q, want %q back", cu.ID, now.Phone, original[cu.ID].Phone)
		}
	}
	// Again, alone and twice at once: nothing more.
	if out, err := remediate("--apply", "--as", "alice"); err != nil || !strings.Contains(out, "reverted 0,") {
		t.Fatalf("second apply: %v\n%s", err, out)
	}
	outs = concurrently()
	if got := revertActions(t, dbPath); len(got) != len(wantRevert) {
		t.Fatalf("%d reverts after applying again, want still %d\n%s\n%s", len(got), len(wantRevert), outs[0], outs[1])
	}
	// The trail shows who reverted what, and links each revert to its action.
	exp, _, err := runMandate(t, nil, "audit", "export", "--db", dbPath, "--agent", "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range wantRevert {
		if !strings.Contains(exp, `"reverts":"`+id+`"`) || !strings.Contains(exp, "revert of "+id) {
			t.Fatalf("the trail does not link a revert to %s", id)
		}
	}
	// Each --apply run recorded its plan, by its person, before its reverts:
	// five runs; the two concurrent first ones planned the 28 between them
	// (one may start after the other reverted some), the later ones none.
	plans, planned := 0, map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(exp), "\n") {
		var r storage.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Tool != tools.RemediateTool {
			continue
		}
		plans++
		var args struct {
			Agent         string   `json:"agent"`
			Revert        []string `json:"revert"`
			NotReversible []string `json:"not_reversible"`
		}
		if err := json.Unmarshal(r.Args, &args); err != nil || args.Agent != "demo-agent" || r.Approver != "alice" || r.Outcome != tools.OutcomePlanned {
			t.Fatalf("plan record: %v %s", err, l)
		}
		if got := slices.Sorted(slices.Values(args.NotReversible)); !slices.Equal(got, slices.Sorted(slices.Values(refundIDs))) {
			t.Fatalf("plan record lists %v as not reversible, want the refunds", got)
		}
		for _, id := range args.Revert {
			if plans > 2 || !slices.Contains(wantRevert, id) {
				t.Fatalf("plan record %d lists %s to revert; want only the first runs to, and only %v", plans, id, wantRevert)
			}
			planned[id] = true
		}
	}
	if len(planned) != len(wantRevert) {
		t.Fatalf("the plans recorded %d changes to revert, want %d", len(planned), len(wantRevert))
	}
	if plans != 5 {
		t.Fatalf("%d plan records, want one per --apply run (5)", plans)
	}
	if out, _, err := runMandate(t, nil, "audit", "verify", "--db", dbPath); err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}

// TestRemediateDemoPhone: on the embedded demo data, whose phone numbers
// are mostly written with spaces ("+1 202 555 0143", which agents may not
// send: they must use E.164), an agent's change of cus_grace's phone is
// put back by mandate remediate --apply to exactly the number the store
// held, and a second run reverts nothing more.
func TestRemediateDemoPhone(t *testing.T) {
	dir := t.TempDir()
	dbPath, storePath := filepath.Join(dir, "mandate.db"), filepath.Join(dir, "store.db") // seeded with the demo data
	bad := startServer(t, mcp.LATEST_PROTOCOL_VERSION, []string{"MANDATE_AGENT=demo-agent"}, "--db", dbPath, "--store", storePath)
	addUsers(t, dbPath, "alice", "bob")
	pw := []string{"MANDATE_ADMIN_PASSWORD=" + cliPassword}

	const was = "+1 202 555 0143"
	if c := customerNow(t, bad, "cus_grace"); c.Phone != was {
		t.Fatalf("cus_grace's phone in the demo data is %q, want %q", c.Phone, was)
	}
	var r actionResult
	decode(t, call(t, bad, "update_account", map[string]any{"customer_id": "cus_grace", "field": "phone", "value": "+15550000001", "reason": "customer asked"}), &r)
	switch r.Status {
	case storage.StatusExecuted:
	case storage.StatusPending:
		if out, _, err := runMandate(t, pw, "approvals", "approve", r.ActionID, "--as", "bob", "--db", dbPath, "--store", storePath); err != nil {
			t.Fatalf("approving %s: %v\n%s", r.ActionID, err, out)
		}
	default:
		t.Fatalf("phone change: %+v", r)
	}
	if c := customerNow(t, bad, "cus_grace"); c.Phone != "+15550000001" {
		t.Fatalf("cus_grace's phone is %q after the agent's change", c.Phone)
	}
	remediate := func(extra ...string) string {
		t.Helper()
		args := append([]string{"remediate", "--agent", "demo-agent", "--since", "1h", "--db", dbPath, "--store", storePath}, extra...)
		out, errOut, err := runMandate(t, pw, args...)
		if err != nil {
			t.Fatalf("mandate %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	var plan tools.Plan
	if err := json.Unmarshal([]byte(remediate("--format", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Revert) != 1 || plan.Revert[0].ActionID != r.ActionID || plan.Revert[0].To != was || len(plan.Skipped) != 0 {
		t.Fatalf("plan: %+v; want %s reverted to %q", plan, r.ActionID, was)
	}
	if out := remediate("--apply", "--as", "alice"); !strings.Contains(out, "reverted 1,") || !strings.Contains(out, "failed 0") {
		t.Fatalf("apply:\n%s", out)
	}
	if c := customerNow(t, bad, "cus_grace"); c.Phone != was {
		t.Fatalf("cus_grace's phone is %q after the revert, want %q exactly", c.Phone, was)
	}
	if out := remediate("--apply", "--as", "alice"); !strings.Contains(out, "reverted 0,") {
		t.Fatalf("second apply:\n%s", out)
	}
	if got := revertActions(t, dbPath); len(got) != 1 {
		t.Fatalf("reverts %v, want exactly one", got)
	}
}

// revertActions returns the executed reverts in the database, by key,
// failing the test if any key was executed twice.
func revertActions(t *testing.T, dbPath string) map[string]string {
	t.Helper()
	if _, err := os.Stat(dbPath); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, dbPath)
	acts, err := db.Actions(t.Context(), storage.ActionFilter{Tool: "update_account", Agent: "alice", Limit: storage.DefaultActionLimit})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range acts {
		if !strings.HasPrefix(a.IdempotencyKey, tools.RevertKeyPrefix) || a.Status != storage.StatusExecuted {
			continue
		}
		if prev, dup := out[a.IdempotencyKey]; dup {
			t.Fatalf("%s executed twice: %s and %s", a.IdempotencyKey, prev, a.ID)
		}
		out[a.IdempotencyKey] = a.ID
	}
	return out
}

func openDB(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

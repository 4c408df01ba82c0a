package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

const auditUsage = `Usage:
  mandate audit verify [--db FILE] [--audit-key FILE] [--since-checkpoint FILE --key VERIFIER_KEY]
      check the hash chain (with the key: the MACs that make it unforgeable) and
      that the actions table says what the trail does; with --since-checkpoint,
      also prove nothing that checkpoint covers was removed or rewritten; exit
      status 1 names the first broken record and every disagreement
  mandate audit mackey --out FILE
      write a new audit key for --audit-key (mode 0600)
  mandate audit export [--db FILE] [--format jsonl|csv|ocsf|text] [--since T] [--until T]
                       [--agent NAME] [--tool NAME] [--decision D] [--action ID] [--trace ID] [--redact]
      print audit records; T is RFC 3339 or a duration ago such as 24h or 7d
  mandate audit tail [--db FILE] [-f] [-n N] [--format text|jsonl|csv|ocsf] [--redact]
      print the last records and, with -f, follow new ones
` + attestUsage

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := groupUsage("audit", auditUsage, args, stdout, stderr); done {
		return err
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "export":
		return runAuditExport(ctx, args[1:], stdout, stderr)
	case "tail":
		return runAuditTail(ctx, args[1:], stdout, stderr)
	case "mackey":
		return runAuditMackey(ctx, args[1:], stdout, stderr)
	case "keygen":
		return runAuditKeygen(args[1:], stdout, stderr)
	case "checkpoint":
		return runAuditCheckpoint(ctx, args[1:], stdout, stderr)
	case "prove":
		return runAuditProve(ctx, args[1:], stdout, stderr)
	case "verify-proof":
		return runAuditVerifyProof(args[1:], stdout, stderr)
	}
	return unknownSubcommand("audit", auditUsage, args[0], stderr)
}

// errStop ends a walk over records early.
var errStop = errors.New("stop")

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", "mandate audit verify [--db FILE] [--audit-key FILE] [--since-checkpoint FILE --key VERIFIER_KEY]", stderr)
	dbPath := dbFlag(fs)
	keyFile := auditKeyFlag(fs)
	since := fs.String("since-checkpoint", "", "also prove the trail extends this older signed checkpoint: nothing it covers was removed or rewritten (docs/attestation.md)")
	keys := keysFlag(fs)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	var sinceCP *sinceCheckpoint
	if *since != "" {
		var err error
		if sinceCP, err = openSinceCheckpoint(*since, keys); err != nil {
			return err
		}
	}
	db, err := openExistingDB(ctx, *dbPath, storage.AuditKeyFile(*keyFile))
	if err != nil {
		return err
	}
	defer db.Close()
	chainErr := verifyChain(ctx, db, *keyFile != "", stdout, stderr)
	if chainErr != nil && !errors.Is(chainErr, errChainFailed) {
		return chainErr
	}
	if sinceCP != nil {
		// Prove the trail extends the older signed checkpoint (nothing it
		// covers removed or rewritten) even when the chain failed or
		// could not be checked: the check recomputes leaves from the rows
		// and needs neither the chain nor the audit key, so an auditor
		// without the key, or facing a broken chain, still learns whether
		// what the checkpoint covers survived.
		if sinceErr := verifySinceCheckpoint(ctx, db, sinceCP, stdout); chainErr == nil {
			chainErr = sinceErr
		}
	}
	crossErr := printCrossCheck(ctx, db, stdout)
	indexErr := printIndexCheck(ctx, db, stdout)
	if chainErr != nil {
		return chainErr
	}
	if crossErr != nil {
		return crossErr
	}
	return indexErr
}

// printIndexCheck compares audit_index, which filtered exports and lineage
// search, with the trail (storage.CheckIndex). Nothing on PostgreSQL.
func printIndexCheck(ctx context.Context, db *storage.DB, stdout io.Writer) error {
	ic, err := db.CheckIndex(ctx)
	if err != nil || ic.None {
		return err
	}
	n := int64(len(ic.Mismatches)) + ic.More
	if n == 0 {
		fmt.Fprintf(stdout, "search keys (audit_index) agree with the trail: %d records indexed\n", ic.Indexed)
		return nil
	}
	fmt.Fprintf(stdout, "search keys (audit_index) DISAGREE with the trail in %d records: filtered exports and lineage may miss records\n", n)
	for _, m := range ic.Mismatches {
		fmt.Fprintln(stdout, "  "+m.String())
	}
	if ic.More > 0 {
		fmt.Fprintf(stdout, "  … and %d more\n", ic.More)
	}
	fmt.Fprintln(stdout, "the index is derived from the records: stop Mandate and run sqlite3 mandate.db 'DELETE FROM audit_index'; the next writes rebuild it")
	return fmt.Errorf("audit verify: audit_index disagrees with the audit trail in %d records", n)
}

// errChainFailed marks a verification that ran and found the chain broken
// or unverifiable, as opposed to one that could not read the database.
var errChainFailed = errors.New("audit verify")

// verifyChain checks the hash chain and prints the verdict on its first
// line: "intact" only for a trail keyed with the audit key given;
// "unanchored" for plain hashes, which anyone who can write the database
// could have recomputed; "broken" or "cannot check" otherwise.
func verifyChain(ctx context.Context, db *storage.DB, keyed bool, stdout, stderr io.Writer) error {
	res, err := db.Verify(ctx)
	var broken *storage.ChainError
	var keyErr *storage.KeyError
	switch {
	case err == nil && res.Anchored():
		fmt.Fprintf(stdout, "intact (keyed from seq %d): %d records, head %s, audit key %s\n", res.KeyedFrom, res.Count, res.Head, res.KeyID)
		if res.KeyedFrom > 1 {
			fmt.Fprintf(stdout, "records 1 to %d predate the key: their hashes are plain, so only the keyed records after them vouch for them\n", res.KeyedFrom-1)
		}
		return nil
	case err == nil && keyed && res.Count > 0:
		fmt.Fprintf(stdout, "unanchored: %d records, head %s, but none is keyed with audit key %s\n", res.Count, res.Head, db.AuditKeyID())
		fmt.Fprintln(stdout, "either no process has written with this key yet, or the keyed records were rewritten as plain ones; compare with a signed checkpoint: mandate audit verify --since-checkpoint FILE")
		return fmt.Errorf("%w: no record is keyed with audit key %s", errChainFailed, db.AuditKeyID())
	case err == nil && keyed:
		fmt.Fprintf(stdout, "intact: the trail is empty; an emptied trail shows only against a signed checkpoint (mandate audit verify --since-checkpoint FILE)\n")
		return nil
	case err == nil:
		fmt.Fprintf(stdout, "unanchored: %d records, head %s\n", res.Count, res.Head)
		fmt.Fprintln(stdout, "the chain links, but its hashes are plain SHA-256: anyone who can write the database could have rewritten it consistently. Anchor it with an audit key (mandate audit mackey --out FILE; then --audit-key FILE on every command) and check it against signed checkpoints (mandate audit verify --since-checkpoint FILE)")
		return nil
	case errors.As(err, &keyErr):
		fmt.Fprintf(stdout, "cannot check: %s\n", keyErr.Error())
		if res.Count > 0 {
			fmt.Fprintf(stdout, "the %d plain records before it link, ending at hash %s\n", res.Count, res.Head)
		}
		return fmt.Errorf("%w: record %d onwards could not be checked without the audit key", errChainFailed, keyErr.Seq)
	case !errors.As(err, &broken):
		return err
	}
	fmt.Fprintf(stdout, "broken: record %d: %s\n", broken.Seq, broken.Reason)
	// Show the record as it is stored now, when there is one at that seq.
	err = db.Records(ctx, storage.Filter{AfterSeq: broken.Seq - 1}, func(r *storage.Record) error {
		if r.Seq == broken.Seq {
			fmt.Fprintf(stdout, "record %d as stored: ", r.Seq)
			if err := newEncoder(stdout).Encode(r); err != nil {
				return err
			}
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		fmt.Fprintf(stderr, "mandate: record %d could not be shown: %v\n", broken.Seq, err)
	}
	fmt.Fprintf(stdout, "the %d records before it are intact, ending at hash %s\n", res.Count, res.Head)
	return fmt.Errorf("%w: the audit chain is broken at record %d", errChainFailed, broken.Seq)
}

// printCrossCheck compares the actions table and the limit counters with
// the trail and prints one line per disagreement.
func printCrossCheck(ctx context.Context, db *storage.DB, stdout io.Writer) error {
	cc, err := db.CrossCheck(ctx)
	if err != nil {
		return err
	}
	n := int64(len(cc.Disagreements)) + cc.More
	if n == 0 {
		fmt.Fprintf(stdout, "actions agree with the trail: %d actions, %d limit counters of the last 30 days\n", cc.Actions, cc.Counters)
		return nil
	}
	fmt.Fprintf(stdout, "actions DISAGREE with the trail: %d disagreements in %d actions and %d limit counters\n", n, cc.Actions, cc.Counters)
	for _, d := range cc.Disagreements {
		fmt.Fprintln(stdout, "  "+d.String())
	}
	if cc.More > 0 {
		fmt.Fprintf(stdout, "  … and %d more\n", cc.More)
	}
	return fmt.Errorf("audit verify: the actions table disagrees with the audit trail in %d places", n)
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit export", "mandate audit export [--db FILE] [--format jsonl|csv|ocsf|text] [filters] [--redact]", stderr)
	dbPath := dbFlag(fs)
	format := fs.String("format", "jsonl", "output format: jsonl, csv, ocsf (OCSF 1.3 API Activity events, one per line) or text (one line per record, as audit tail prints)")
	var ff filterFlags
	ff.register(fs)
	redact := fs.Bool("redact", false, "mask customer personal data (email, phone, address, name) in arguments and errors")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	filter, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	out, err := newRecordWriter(*format, w)
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	return printRecords(ctx, db, filter, *redact, out, w, nil)
}

// printRecords writes the records f selects, masked if redact, and flushes
// them; seen, if set, is told of each record first.
func printRecords(ctx context.Context, db *storage.DB, f storage.Filter, redact bool, out recordWriter, w *bufio.Writer, seen func(*storage.Record)) error {
	err := db.Records(ctx, f, func(r *storage.Record) error {
		if seen != nil {
			seen(r)
		}
		if redact {
			r = r.Redacted()
		}
		return out.write(r)
	})
	if err != nil {
		return err
	}
	if err := out.flush(); err != nil {
		return err
	}
	return w.Flush()
}

// tailPoll is how often `audit tail -f` looks for new records.
const tailPoll = 200 * time.Millisecond

func runAuditTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit tail", "mandate audit tail [--db FILE] [-f] [-n N] [--format text|jsonl|csv|ocsf] [--redact]", stderr)
	dbPath := dbFlag(fs)
	follow := fs.Bool("f", false, "keep printing new records as they are written, until interrupted")
	n := fs.Int("n", 10, "how many of the last records to print first")
	format := fs.String("format", "text", "output format: text, jsonl, csv or ocsf")
	redact := fs.Bool("redact", false, "mask customer personal data (email, phone, address, name) in arguments and errors")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *n < 0 {
		return usageError{"audit tail: -n must not be negative"}
	}
	// tail prints to a terminal: whatever the format, no record may pass
	// hidden characters to it (terminalSafe).
	w := bufio.NewWriter(&terminalSafe{w: stdout, json: *format == "jsonl" || *format == "ocsf"})
	out, err := newRecordWriter(*format, w)
	if err != nil {
		return err
	}
	db, err := openExistingDB(ctx, *dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	head, _, err := db.Head(ctx)
	if err != nil {
		return err
	}
	last := max(head-int64(*n), 0)
	emit := func() error {
		return printRecords(ctx, db, storage.Filter{AfterSeq: last}, *redact, out, w, func(r *storage.Record) { last = r.Seq })
	}
	if err := emit(); err != nil || !*follow {
		return err
	}
	tick := time.NewTicker(tailPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := emit(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// terminalSafe passes output on with the hidden characters of mandate.Visible
// made harmless: in JSON as \u escapes, which decode to the same text; in
// other formats as ⟨U+202E⟩, newlines kept. It holds back a character split
// across writes.
type terminalSafe struct {
	w    io.Writer
	json bool
	rest []byte
}

func (t *terminalSafe) Write(p []byte) (int, error) {
	b := append(t.rest, p...)
	n := len(b)
	// Keep an incomplete character at the end for the next write.
	for i := 1; i <= utf8.UTFMax && i <= n; i++ {
		if utf8.RuneStart(b[n-i]) {
			if !utf8.FullRune(b[n-i:]) {
				n -= i
			}
			break
		}
	}
	t.rest = append([]byte(nil), b[n:]...)
	s := string(b[:n])
	if mandate.HasHidden(s, true) {
		if t.json {
			s = jsonEscapeHidden(s)
		} else {
			s = mandate.Visible(s, true)
		}
	}
	if _, err := io.WriteString(t.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonEscapeHidden writes each hidden character of JSON text as a \u
// escape. Outside strings JSON is ASCII punctuation, so every such
// character is inside a string, where the escape means the same.
func jsonEscapeHidden(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '\n' || r == '\t' || !mandate.HasHidden(string(r), true) {
			b.WriteRune(r)
			continue
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			fmt.Fprintf(&b, "\\u%04x\\u%04x", r1, r2)
		} else {
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

// filterFlags are export's record filters.
type filterFlags struct{ since, until, agent, tool, decision, action, trace string }

func (f *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.since, "since", "", "only records at or after this time: RFC 3339, a date, or a duration ago such as 24h or 7d; 0 for the whole trail")
	fs.StringVar(&f.until, "until", "", "only records before this time, in the same forms as --since")
	fs.StringVar(&f.agent, "agent", "", "only records of this agent (or, for approvals, approver)")
	fs.StringVar(&f.tool, "tool", "", "only records of this tool")
	fs.StringVar(&f.decision, "decision", "", "only records with this decision: allow, deny or require_approval")
	fs.StringVar(&f.action, "action", "", "only records of this action_id")
	fs.StringVar(&f.trace, "trace", "", "only records of the actions asked for in this W3C trace (32 hex digits, the trace-id of a traceparent)")
}

func (f *filterFlags) filter(now time.Time) (storage.Filter, error) {
	since, err := parseWhen("since", f.since, now)
	if err != nil {
		return storage.Filter{}, err
	}
	until, err := parseWhen("until", f.until, now)
	if err != nil {
		return storage.Filter{}, err
	}
	switch f.decision {
	case "", policy.Allow, policy.Deny, policy.RequireApproval:
	default:
		return storage.Filter{}, usageError{fmt.Sprintf("--decision %q: use allow, deny or require_approval", f.decision)}
	}
	trace, err := traceFlag(f.trace)
	if err != nil {
		return storage.Filter{}, err
	}
	return storage.Filter{Since: since, Until: until, Agent: f.agent, Tool: f.tool, Decision: f.decision, ActionID: f.action, TraceID: trace}, nil
}

// parseWhen reads a time as RFC 3339, a date (midnight UTC), or a duration
// before now: "90m", "24h", "7d".
func parseWhen(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	}
	if err != nil || d < 0 {
		return time.Time{}, usageError{fmt.Sprintf("--%s %q: use an RFC 3339 time such as 2026-11-25T09:00:00Z, a date, a duration ago such as 24h or 7d, or 0 for the whole trail", name, s)}
	}
	if d == 0 {
		// As in policy replay and remediate: "0 ago" would be an empty
		// window, read as "nothing recorded" in an incident.
		return time.Time{}, nil
	}
	return now.Add(-d), nil
}

// recordWriter writes audit records in one output format.
type recordWriter interface {
	write(r *storage.Record) error
	flush() error
}

func newRecordWriter(format string, w io.Writer) (recordWriter, error) {
	switch format {
	case "jsonl":
		return jsonWriter{newEncoder(w), func(r *storage.Record) any { return r }}, nil
	case "ocsf":
		return jsonWriter{newEncoder(w), func(r *storage.Record) any { return ocsfEvent(r) }}, nil
	case "csv":
		cw := csv.NewWriter(w)
		return csvWriter{cw}, cw.Write(csvHeader)
	case "text":
		return textWriter{w}, nil
	}
	return nil, usageError{fmt.Sprintf("--format %q: use jsonl, csv, ocsf or text", format)}
}

func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

type jsonWriter struct {
	enc  *json.Encoder
	form func(*storage.Record) any
}

func (j jsonWriter) write(r *storage.Record) error { return j.enc.Encode(j.form(r)) }
func (j jsonWriter) flush() error                  { return nil }

// csvHeader names the CSV columns as the JSON Lines export names its fields.
var csvHeader = storage.CSVHeader

type csvWriter struct{ w *csv.Writer }

// write writes r with formula-like cells neutralised (storage.CSVCell).
func (c csvWriter) write(r *storage.Record) error { return c.w.Write(r.CSVRow()) }

func (c csvWriter) flush() error { c.w.Flush(); return c.w.Error() }

// textWriter prints one line per record for people following the trail.
type textWriter struct{ w io.Writer }

// Every field an agent, customer or approver could have written is shown
// with hidden characters escaped (⟨U+202E⟩), so a record cannot drive the
// terminal or read as something else.
func (t textWriter) write(r *storage.Record) error {
	v := func(s string) string { return mandate.Visible(s, false) }
	line := fmt.Sprintf("%6d  %s  %-8s %-12s %-16s %-16s %-8s %-9s %s", r.Seq, r.Time.Local().Format("2006-01-02 15:04:05.000"),
		v(r.Phase), v(r.Agent), v(r.Tool), v(r.Decision), v(r.Outcome), v(r.ActionID), v(string(r.Args)))
	if r.Approver != "" && r.Approver != r.Agent {
		line += "  approver: " + v(r.Approver)
	}
	if r.Comment != "" {
		line += "  comment: " + v(r.Comment)
	}
	if r.Error != "" {
		line += "  error: " + v(r.Error)
	}
	if c := storage.ChangesSummary(r.Changes); c != "" {
		line += "  changed: " + v(c)
	}
	_, err := fmt.Fprintln(t.w, line)
	return err
}

func (t textWriter) flush() error { return nil }

package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mandatehq/mandate"
)

// CopyReport says what Copy copied.
type CopyReport struct {
	Tables  map[string]int64 // rows copied per table
	Records int64            // audit records, verified at both ends
	Head    string           // the chain head, the same at both ends
}

// copySkip are the tables Copy does not copy: each engine keeps its own
// record of migrations, PostgreSQL's chain_head is only a lock, and
// SQLite's audit_index is derived from the trail (migration 0023): a copy
// into SQLite builds it from the copied records.
var copySkip = map[string]bool{"migrations": true, "chain_head": true, "audit_index": true}

// Copy copies every table of from into to, which must be empty and at the
// same schema version (the same migrations applied), for moving a SQLite
// trail into PostgreSQL (`mandate storage migrate`), or back. The audit
// chain is verified in from first and in to afterwards, and both must end
// at the same head hash.
//
// It reads from inside one transaction: on SQLite a write transaction, so
// nobody writes to from while it is copied (processes that try wait for
// it); on PostgreSQL one REPEATABLE READ snapshot of every table. It
// writes to in one transaction that starts by taking the chain-head lock
// on PostgreSQL: a replica already running on to waits, and either sees
// nothing or everything. Stop the servers on from first anyway: what they
// write after the copy stays behind.
func Copy(ctx context.Context, from, to *DB) (CopyReport, error) {
	rep := CopyReport{Tables: map[string]int64{}}
	src, err := from.Verify(ctx)
	if err != nil {
		return rep, fmt.Errorf("the source trail does not verify, so nothing was copied: %w", err)
	}
	fromMig, err := appliedNames(ctx, from.db)
	if err != nil {
		return rep, unavailable("read source migrations", err)
	}
	toMig, err := appliedNames(ctx, to.db)
	if err != nil {
		return rep, unavailable("read destination migrations", err)
	}
	if strings.Join(fromMig, ",") != strings.Join(toMig, ",") {
		return rep, mandate.Errorf(mandate.ECONFLICT, "the two databases are at different schema versions (%d and %d migrations applied): open both with this version of mandate, which brings them up to date, and run it again", len(fromMig), len(toMig))
	}

	// IMMEDIATE on SQLite: writers wait. On PostgreSQL a REPEATABLE READ
	// snapshot: every table is read as of one moment.
	var ropts *sql.TxOptions
	if from.postgres {
		ropts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	rtx, err := from.db.BeginTx(ctx, ropts)
	if err != nil {
		return rep, unavailable("begin reading source", err)
	}
	defer rtx.Rollback()
	wtx, err := to.db.BeginTx(ctx, nil)
	if err != nil {
		return rep, unavailable("begin writing destination", err)
	}
	defer wtx.Rollback()
	if to.postgres {
		if err := lockChainHead(ctx, wtx); err != nil {
			return rep, unavailable("lock chain head", err)
		}
	}
	tables, err := tableNames(ctx, from)
	if err != nil {
		return rep, unavailable("list tables", err)
	}
	for _, t := range tables {
		var n int64
		if err := wtx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t).Scan(&n); err != nil {
			return rep, unavailable("count "+t, err)
		} else if n > 0 {
			return rep, mandate.Errorf(mandate.ECONFLICT, "the destination is not empty (table %s has %d rows): copy into a new database", t, n)
		}
	}
	// Referenced tables first (users before sessions, policy_texts before
	// policy_loads): a table whose rows fail a foreign key is retried after
	// the others, inside a savepoint, so the order needs no list.
	pending := tables
	for len(pending) > 0 {
		var retry []string
		var lastErr error
		for _, t := range pending {
			if _, err := wtx.ExecContext(ctx, "SAVEPOINT copy_table"); err != nil {
				return rep, unavailable("savepoint", err)
			}
			n, err := copyTable(ctx, rtx, wtx, t, to.postgres)
			var nul *nulError
			if errors.As(err, &nul) {
				// No order of the tables copies it.
				return rep, mandate.Errorf(mandate.ECONFLICT, "%s", nul.Error())
			}
			if err != nil {
				if _, rerr := wtx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT copy_table"); rerr != nil {
					return rep, unavailable("rollback to savepoint", rerr)
				}
				retry, lastErr = append(retry, t), fmt.Errorf("table %s: %w", t, err)
				continue
			}
			if _, err := wtx.ExecContext(ctx, "RELEASE SAVEPOINT copy_table"); err != nil {
				return rep, unavailable("release savepoint", err)
			}
			rep.Tables[t] = n
		}
		if len(retry) == len(pending) {
			return rep, unavailable("copy", lastErr)
		}
		pending = retry
	}
	if to.postgres {
		// Identity columns continue after the copied values.
		rows, err := wtx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
			WHERE table_schema = current_schema() AND is_identity = 'YES'`)
		if err != nil {
			return rep, unavailable("list identity columns", err)
		}
		var ids [][2]string
		for rows.Next() {
			var t, c string
			if err := rows.Scan(&t, &c); err != nil {
				rows.Close()
				return rep, unavailable("list identity columns", err)
			}
			ids = append(ids, [2]string{t, c})
		}
		rows.Close()
		for _, id := range ids {
			if _, err := wtx.ExecContext(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'), COALESCE((SELECT MAX(%s) FROM %s), 0) + 1, false)`,
				id[0], id[1], id[1], id[0])); err != nil {
				return rep, unavailable("reset identity "+id[0], err)
			}
		}
	}
	if !to.postgres {
		// The copied trail's search keys, built here once rather than by
		// the first write after the copy, under the write lock.
		if _, err := wtx.ExecContext(ctx, indexTail); err != nil {
			return rep, unavailable("index the trail", err)
		}
	}
	if err := wtx.Commit(); err != nil {
		return rep, unavailable("commit", err)
	}
	dst, err := to.Verify(ctx)
	if err != nil {
		return rep, fmt.Errorf("the copied trail does not verify: %w", err)
	}
	if dst.Count != src.Count || dst.Head != src.Head {
		return rep, fmt.Errorf("the copied trail has %d records ending at %s, the source %d ending at %s", dst.Count, dst.Head, src.Count, src.Head)
	}
	rep.Records, rep.Head = dst.Count, dst.Head
	return rep, nil
}

// appliedNames lists the migrations applied to a database.
func appliedNames(ctx context.Context, q rowsQuerier) ([]string, error) {
	return queryNames(ctx, q, `SELECT name FROM migrations ORDER BY name`)
}

// tableNames lists db's own tables, in name order, without those Copy skips.
func tableNames(ctx context.Context, db *DB) ([]string, error) {
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`
	if db.postgres {
		q = `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()`
	}
	names, err := queryNames(ctx, db.db, q)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if !copySkip[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// queryNames runs a query of one text column and returns its values.
func queryNames(ctx context.Context, q rowsQuerier, query string) ([]string, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// copyTable copies every row of table from rtx to wtx, by column name,
// and returns how many.
func copyTable(ctx context.Context, rtx, wtx *sql.Tx, table string, toPostgres bool) (int64, error) {
	rows, err := rtx.QueryContext(ctx, `SELECT * FROM `+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = `"` + c + `"`
	}
	ins := fmt.Sprintf(`INSERT INTO %s (%s) VALUES (%s)`, table, strings.Join(quoted, ", "),
		strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", "))
	st, err := wtx.PrepareContext(ctx, ins)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	// Which destination columns are text: bytes read from a bytea column
	// (usage_totals.scope on PostgreSQL) go into SQLite's text column as
	// text, into a BLOB column (merkle_nodes.hash) as bytes; and a string
	// holding NUL cannot go into PostgreSQL's text at all.
	text := map[string]bool{}
	drows, err := wtx.QueryContext(ctx, `SELECT * FROM `+table+` LIMIT 0`)
	if err != nil {
		return 0, err
	}
	types, err := drows.ColumnTypes()
	drows.Close()
	if err != nil {
		return 0, err
	}
	for _, ct := range types {
		text[ct.Name()] = strings.EqualFold(ct.DatabaseTypeName(), "TEXT")
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok && text[cols[i]] && !toPostgres {
				vals[i] = string(b)
			}
			if s, ok := v.(string); ok && text[cols[i]] && toPostgres && strings.IndexByte(s, 0) >= 0 {
				return n, &nulError{table: table, column: cols[i], key: cols[0], value: vals[0]}
			}
		}
		if _, err := st.ExecContext(ctx, vals...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

// nulError is Copy's refusal of a row PostgreSQL cannot store: a text
// column holding NUL, which SQLite stores and Mandate wrote before it
// replaced NUL in free text (cleanText). The record's hash covers the NUL,
// so the copy cannot change it either.
type nulError struct {
	table, column, key string
	value              any // the row's first column: its key
}

func (e *nulError) Error() string {
	what := fmt.Sprintf("table %s, the row with %s = %v,", e.table, e.key, e.value)
	if e.table == "audit" {
		what = fmt.Sprintf("audit record %v", e.value)
	}
	return fmt.Sprintf("%s holds a NUL byte in %s, which PostgreSQL's text cannot store (and changing it would break the chain): this trail cannot be copied to PostgreSQL, so nothing was copied", what, e.column)
}

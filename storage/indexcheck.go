package storage

import (
	"context"
	"fmt"
	"strings"
)

// IndexCheck is what CheckIndex found.
type IndexCheck struct {
	None       bool            // PostgreSQL: no audit_index to check
	Indexed    int64           // records the index covers (its prefix of the trail)
	Mismatches []IndexMismatch // the first ones, in seq order
	More       int64           // mismatches past those listed
}

// IndexMismatch is one record whose search keys in audit_index are not
// the record's, or one index row with no record.
type IndexMismatch struct {
	Seq    int64
	Reason string
}

func (m IndexMismatch) String() string { return fmt.Sprintf("record %d: %s", m.Seq, m.Reason) }

// maxIndexMismatches is how many mismatches CheckIndex lists.
const maxIndexMismatches = 20

// CheckIndex compares audit_index with the audit rows it was built from.
// The index is derived and unchained: filtered exports, lineage and prove
// find records through it (audit_keys), so an index row edited or deleted
// would hide a record from them while the chain stays intact. One merged
// pass by seq over both tables: each record the index's prefix covers must
// have its row with the same keys, and no row may name a record that is
// not there (a row past the head would stop the index, and with it the
// search of newer records, from growing). SQLite only: PostgreSQL indexes
// the audit table itself.
func (db *DB) CheckIndex(ctx context.Context) (IndexCheck, error) {
	db.settle(ctx) // this process reads its own write-behinds (behind.go)
	var c IndexCheck
	if db.postgres {
		return IndexCheck{None: true}, nil
	}
	tx, err := db.db.BeginTx(ctx, nil) // one snapshot of both tables
	if err != nil {
		return c, unavailable("check audit_index", err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_index`).Scan(&c.Indexed); err != nil {
		return c, unavailable("check audit_index", err)
	}
	differs := func(col, expr string) string {
		return `CASE WHEN i.` + col + ` IS NOT ` + expr + ` THEN ', ` + col + `' ELSE '' END`
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT a.seq, CASE WHEN i.seq IS NULL THEN ', missing' ELSE `+strings.Join([]string{
		differs("time", "a.time"), differs("agent", "a.agent"), differs("action_id", "a.action_id"),
		differs("phase", "a.phase"), differs("customer_id", indexedCustomer("a")), differs("order_id", argsOrder)}, ` || `)+` END AS diff
		FROM audit a LEFT JOIN audit_index i ON i.seq = a.seq
		WHERE a.seq <= ? AND diff != ''
		UNION ALL
		SELECT seq, ', orphan' FROM audit_index i WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.seq = i.seq)
		ORDER BY 1`, c.Indexed)
	if err != nil {
		return c, unavailable("check audit_index", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m IndexMismatch
		var diff string
		if err := rows.Scan(&m.Seq, &diff); err != nil {
			return c, unavailable("check audit_index", err)
		}
		if len(c.Mismatches) == maxIndexMismatches {
			c.More++
			continue
		}
		switch diff = strings.TrimPrefix(diff, ", "); diff {
		case "missing":
			m.Reason = "not in audit_index, so searches by agent, action, time, trace, customer or order miss it"
		case "orphan":
			m.Reason = "audit_index has a row for it, but there is no such record"
		default:
			m.Reason = "audit_index gives it another " + diff + " than the record has, so searches by them miss it or find it wrongly"
		}
		c.Mismatches = append(c.Mismatches, m)
	}
	return c, rows.Err()
}

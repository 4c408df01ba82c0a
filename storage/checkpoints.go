package storage

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"

	"github.com/mandatehq/mandate"
)

// StoredCheckpoint is a signed checkpoint kept in the database.
type StoredCheckpoint struct {
	Origin string
	Size   uint64
	Root   string // standard base64
	Note   string // the signed note, as published
}

// SaveCheckpoint keeps a signed checkpoint. One already stored for the same
// origin and size is kept as it is: with the same key it is the same note.
func (db *DB) SaveCheckpoint(ctx context.Context, origin string, size uint64, root []byte, note string) error {
	return db.writeLazy(func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO checkpoints (origin, size, root_hash, note, created_at) VALUES (?, ?, ?, ?, ?)`,
			origin, int64(size), base64.StdEncoding.EncodeToString(root), note, timeText(db.Now()))
		if err != nil {
			return unavailable("save checkpoint", err)
		}
		return nil
	})
}

// LatestCheckpoint is the stored checkpoint of the largest tree, of origin
// if it is set; a not_found error when there is none.
func (db *DB) LatestCheckpoint(ctx context.Context, origin string) (StoredCheckpoint, error) {
	var c StoredCheckpoint
	var size int64
	// With an origin this is a primary-key search (the checkpointer asks
	// every interval); without one, the CLI's question, it scans.
	q, args := `SELECT origin, size, root_hash, note FROM checkpoints WHERE origin = ? ORDER BY size DESC LIMIT 1`, []any{origin}
	if origin == "" {
		q, args = `SELECT origin, size, root_hash, note FROM checkpoints ORDER BY size DESC, created_at DESC LIMIT 1`, nil
	}
	err := db.db.QueryRowContext(ctx, q, args...).Scan(&c.Origin, &size, &c.Root, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return c, mandate.Errorf(mandate.ENOTFOUND, "no checkpoint has been signed yet: run `mandate serve --checkpoint-key FILE` or `mandate audit checkpoint --key FILE`")
	}
	if err != nil {
		return c, unavailable("read checkpoints", err)
	}
	c.Size = uint64(size)
	return c, nil
}

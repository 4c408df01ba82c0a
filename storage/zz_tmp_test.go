package storage

import (
	"context"
	"os"
	"strings"
	"testing"
)

func BenchmarkTmpAppendReadDrop(b *testing.B) {
	db := openTest(b)
	ctx := context.Background()
	for _, ix := range strings.Fields(os.Getenv("DROPIX")) {
		if _, err := db.db.Exec("DROP INDEX " + ix); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if err := db.AppendRead(ctx, benchRecord()); err != nil {
			b.Fatal(err)
		}
	}
}

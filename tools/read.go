package tools

import (
	"context"
	"log/slog"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/storage"
	"github.com/mark3labs/mcp-go/mcp"
)

// customerShown is a lookup's answer that shows a customer's data.
type customerShown interface{ shownCustomer() string }

// read runs an allowed lookup and records what it showed before showing
// it: outcome read and the customer whose data the answer holds
// (Record.ShownCustomer, so the customer's lineage finds it whatever the
// arguments named), or not_found when there was nothing to show. The read
// comes first because the record says what was shown; nothing is shown
// unless the record is in the lookup journal or committed
// (storage/journal.go).
func read[A any](ctx context.Context, d *Deps, s spec[A], a *A, rec *storage.Record, start time.Time, log *slog.Logger) *mcp.CallToolResult {
	out, err := s.run(ctx, d, a, rec.ActionID)
	switch code := mandate.ErrorCode(err); {
	case err == nil:
		rec.Outcome = storage.OutcomeRead
		if c, ok := out.(customerShown); ok {
			rec.ShownCustomer = c.shownCustomer()
		}
	case code == mandate.ENOTFOUND:
		rec.Outcome, rec.Error = storage.OutcomeNotFound, code
	default:
		rec.Outcome, rec.Error = storage.OutcomeUnread, code
	}
	rec.Duration = d.Now().Sub(start)
	if rerr := recordShown(ctx, d, rec); rerr != nil {
		log.Error("audit write failed; refusing", "err", rerr)
		return auditFailedResult()
	}
	if err != nil {
		return errorResult(err)
	}
	return mcp.NewToolResultStructuredOnly(out)
}

// recordShown puts an allowed read's record in the lookup journal (or
// commits it, where there is none) and returns once it is there: only then
// may the answer be shown. Decided and read, the record is written whole
// even if the caller has gone.
func recordShown(ctx context.Context, d *Deps, rec *storage.Record) error {
	wctx := context.WithoutCancel(ctx)
	recorded, err := d.DB.AppendLookup(wctx, rec)
	if err == nil {
		err = recorded(wctx)
	}
	return err
}

package admin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/storage"
)

// The timelines of one customer or one order: the same records, in the same
// order, as `mandate lineage` (storage.Lineage), for people reviewing what
// agents did. Linked from the approvals queue, an action's page and the
// audit viewer.

func init() {
	// subjects names the customer and order an audit record is about, for
	// links to their timelines; pathEsc makes an id one path segment.
	funcs["subjects"] = subjects
	funcs["changed"] = storage.ChangesSummary
	funcs["pathEsc"] = url.PathEscape
}

// maxLineageRows bounds one timeline page: the newest that match.
const maxLineageRows = 500

type lineageRow struct {
	*storage.Record
	Subjects subjectIDs
}

type lineageData struct {
	Kind, ID  string // "customer" or "order", and its id
	Since     string
	Trace     string
	Rows      []lineageRow
	Truncated bool
	FilterErr string
}

// subjectIDs are the customer and order a record names in its arguments
// or, for an order action, in what it changed.
type subjectIDs struct{ Customer, Order string }

func subjects(r *storage.Record) subjectIDs {
	var a struct {
		CustomerID string `json:"customer_id"`
		OrderID    string `json:"order_id"`
	}
	_ = json.Unmarshal(r.Args, &a)
	out := subjectIDs{Customer: a.CustomerID, Order: a.OrderID}
	if c, err := storage.ParseChanges(r.Changes); err == nil && c != nil && out.Customer == "" {
		out.Customer = c.CustomerID
	}
	return out
}

// lineage serves /customers/{id} and /orders/{id}.
func (s *Server) lineage(kind string) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, sess *session) {
		q := r.URL.Query()
		d := lineageData{Kind: kind, ID: r.PathValue("id"), Since: strings.TrimSpace(q.Get("since")), Trace: strings.ToLower(strings.TrimSpace(q.Get("trace")))}
		f := storage.LineageFilter{TraceID: d.Trace}
		if kind == "customer" {
			f.CustomerID = d.ID
		} else {
			f.OrderID = d.ID
		}
		var err error
		if f.Since, err = parseWhen(d.Since); err != nil {
			d.FilterErr = "since: " + err.Error()
		}
		if d.Trace != "" && (len(d.Trace) != 32 || strings.Trim(d.Trace, "0123456789abcdef") != "") {
			d.FilterErr, f.TraceID = "trace: give a W3C trace-id, 32 hex digits", ""
		}
		err = s.cfg.Deps.DB.Lineage(r.Context(), f, func(rec *storage.Record) error {
			d.Rows = append(d.Rows, lineageRow{Record: rec, Subjects: subjects(rec)})
			if len(d.Rows) > maxLineageRows {
				d.Rows, d.Truncated = d.Rows[1:], true
			}
			return nil
		})
		if err != nil {
			s.fail(w, err)
			return
		}
		title := strings.ToUpper(kind[:1]) + kind[1:] + " " + d.ID
		s.render(w, http.StatusOK, "lineage", page{Title: title, User: sess.User, CSRF: sess.CSRF, Approver: sess.role == auth.Approver, Nav: "audit", Data: d})
	}
}

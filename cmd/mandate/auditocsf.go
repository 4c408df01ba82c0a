package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/storage"
)

// OCSF (https://schema.ocsf.io) API Activity: what SIEMs ingest. Each audit
// record becomes one event; what OCSF has no attribute for is in unmapped.
const (
	ocsfVersion       = "1.3.0"
	ocsfClassUID      = 6003
	ocsfCategoryUID   = 6
	ocsfOther         = 99
	ocsfInformational = 1
)

type ocsfAPIActivity struct {
	ActivityID   int               `json:"activity_id"`
	ActivityName string            `json:"activity_name"`
	CategoryUID  int               `json:"category_uid"`
	CategoryName string            `json:"category_name"`
	ClassUID     int               `json:"class_uid"`
	ClassName    string            `json:"class_name"`
	TypeUID      int               `json:"type_uid"`
	TypeName     string            `json:"type_name"`
	Time         int64             `json:"time"`
	Duration     int64             `json:"duration"`
	SeverityID   int               `json:"severity_id"`
	Severity     string            `json:"severity"`
	StatusID     int               `json:"status_id"`
	Status       string            `json:"status"`
	StatusDetail string            `json:"status_detail,omitempty"`
	Message      string            `json:"message"`
	Actor        ocsfActor         `json:"actor"`
	API          ocsfAPI           `json:"api"`
	SrcEndpoint  ocsfEndpoint      `json:"src_endpoint"`
	Resources    []ocsfResource    `json:"resources,omitempty"`
	Metadata     ocsfMetadata      `json:"metadata"`
	Unmapped     ocsfUnmappedAudit `json:"unmapped"`
}

type ocsfActor struct {
	User struct {
		Name string `json:"name"`
	} `json:"user"`
	// Session names the credential the call was made with (key:<id>,
	// jwt:<jti>, ...) as OCSF's credential_uid; absent when none was.
	Session *ocsfSession `json:"session,omitempty"`
}

type ocsfSession struct {
	CredentialUID string `json:"credential_uid"`
}

type ocsfAPI struct {
	Operation string `json:"operation"`
	Request   struct {
		UID string `json:"uid"`
	} `json:"request"`
	Response *ocsfResponse `json:"response,omitempty"`
}

type ocsfResponse struct {
	Error        string `json:"error"`
	ErrorMessage string `json:"error_message,omitempty"`
}

type ocsfEndpoint struct {
	Name string `json:"name"`
}

type ocsfResource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type ocsfMetadata struct {
	Version string `json:"version"`
	Product struct {
		Name       string `json:"name"`
		VendorName string `json:"vendor_name"`
		Version    string `json:"version"`
	} `json:"product"`
	UID            string `json:"uid"`
	CorrelationUID string `json:"correlation_uid"`
	Sequence       int64  `json:"sequence"`
	LogName        string `json:"log_name"`
	EventCode      string `json:"event_code"`
	OriginalTime   string `json:"original_time"`
}

type ocsfUnmappedAudit struct {
	Seq           int64           `json:"seq"`
	Decision      string          `json:"decision"`
	Rule          string          `json:"rule"`
	PolicyVersion string          `json:"policy_version"`
	ActionID      string          `json:"action_id"`
	Phase         string          `json:"phase"`
	Outcome       string          `json:"outcome"`
	Approver      string          `json:"approver,omitempty"`
	Comment       string          `json:"comment,omitempty"`
	Args          json.RawMessage `json:"args,omitempty"`
	Attrs         json.RawMessage `json:"attrs,omitempty"`
	// Changes, TraceID and ConversationID: see storage.Record.
	Changes        json.RawMessage `json:"changes,omitempty"`
	TraceID        string          `json:"trace_id,omitempty"`
	ConversationID string          `json:"conversation_id,omitempty"`
	// KeyID and DurationUS complete what the chain hash and the Merkle
	// leaf cover (OCSF's duration is in milliseconds), so a copy in a
	// SIEM stays checkable (docs/attestation.md).
	KeyID      string `json:"key_id,omitempty"`
	DurationUS int64  `json:"duration_us"`
	// ShownCustomer: see storage.Record.
	ShownCustomer string `json:"shown_customer,omitempty"`
	PrevHash      string `json:"prev_hash"`
	Hash          string `json:"hash"`
	LeafIndex     uint64 `json:"leaf_index"`
}

// ocsfActivities maps each tool to an API Activity activity_id: reads are
// Read, a refund creates one, the other actions update what exists.
var ocsfActivities = map[string]struct {
	id   int
	name string
}{
	"get_order": {2, "Read"}, "get_customer": {2, "Read"}, "find_customer": {2, "Read"}, "get_action_status": {2, "Read"},
	"refund_order": {1, "Create"}, "cancel_order": {3, "Update"}, "update_account": {3, "Update"},
}

func ocsfEvent(r *storage.Record) ocsfAPIActivity {
	act, ok := ocsfActivities[r.Tool]
	switch {
	case r.Phase == storage.PhaseApproval:
		act.id, act.name = ocsfOther, "Approval"
	case !ok:
		act.id, act.name = ocsfOther, "Other"
	}
	statusID, status, detail := ocsfStatus(r)
	e := ocsfAPIActivity{
		ActivityID: act.id, ActivityName: act.name,
		CategoryUID: ocsfCategoryUID, CategoryName: "Application Activity",
		ClassUID: ocsfClassUID, ClassName: "API Activity",
		TypeUID: ocsfClassUID*100 + act.id, TypeName: "API Activity: " + act.name,
		Time: r.Time.UnixMilli(), Duration: r.Duration.Milliseconds(),
		SeverityID: ocsfInformational, Severity: "Informational",
		StatusID: statusID, Status: status, StatusDetail: detail,
		Message:     fmt.Sprintf("%s %s %s: %s", r.Agent, r.Phase, r.Tool, status),
		SrcEndpoint: ocsfEndpoint{Name: r.Agent},
		Unmapped: ocsfUnmappedAudit{Seq: r.Seq, Decision: r.Decision, Rule: r.Rule, PolicyVersion: r.PolicyVersion,
			ActionID: r.ActionID, Phase: r.Phase, Outcome: r.Outcome, Approver: r.Approver, Comment: r.Comment,
			Args: jsonOrNil(r.Args), Attrs: jsonOrNil(r.Attrs),
			Changes: jsonOrNil(r.Changes), TraceID: r.TraceID, ConversationID: r.ConversationID,
			KeyID: r.KeyID, DurationUS: r.Duration.Microseconds(), ShownCustomer: r.ShownCustomer,
			PrevHash: r.PrevHash, Hash: r.Hash, LeafIndex: r.LeafIndex()},
	}
	e.Actor.User.Name = r.Agent
	if r.Credential != "" {
		e.Actor.Session = &ocsfSession{CredentialUID: r.Credential}
	}
	e.API.Operation = r.Tool
	e.API.Request.UID = r.ActionID
	if r.Error != "" {
		e.API.Response = &ocsfResponse{Error: r.Outcome, ErrorMessage: r.Error}
	}
	e.Resources = ocsfResources(r.Args)
	m := &e.Metadata
	m.Version = ocsfVersion
	m.Product.Name, m.Product.VendorName, m.Product.Version = "Mandate", "Mandate", version
	m.UID, m.CorrelationUID, m.Sequence = r.Hash, r.ActionID, r.Seq
	m.LogName, m.EventCode, m.OriginalTime = "audit", r.Phase, r.Time.UTC().Format(time.RFC3339Nano)
	return e
}

// ocsfStatus maps a record's decision and outcome to an OCSF status:
// success when something was done or read, failure when it was refused or
// failed, other while it is still under way or waiting for a person.
func ocsfStatus(r *storage.Record) (int, string, string) {
	switch r.Outcome {
	case storage.StatusExecuted, storage.OutcomeRead, storage.StatusApproved:
		return 1, "Success", r.Outcome
	case storage.StatusFailed, "refused", storage.StatusDenied, storage.StatusExpired:
		detail := r.Outcome
		if r.Decision == policy.Deny {
			detail = "refused by the rules: " + r.Rule
		}
		if r.Error != "" {
			detail += ": " + r.Error
		}
		return 2, "Failure", detail
	case storage.OutcomeNotFound:
		// Allowed, but there was nothing to show, as an HTTP 404 is a
		// failure: a run of them is someone guessing ids.
		return 2, "Failure", "not_found: allowed, but nothing was found, so nothing was shown"
	case storage.OutcomeUnread:
		return 2, "Failure", "unread: allowed, but the read failed (" + r.Error + "), so nothing was shown"
	case storage.StatusPending:
		return ocsfOther, "Pending approval", "a person must approve it: " + r.Rule
	case "":
		return ocsfOther, "Attempted", "allowed; the outcome is recorded separately"
	}
	return ocsfOther, r.Outcome, r.Error
}

// ocsfResources names the order or customer a call was about.
func ocsfResources(args json.RawMessage) []ocsfResource {
	var ids struct {
		OrderID    string `json:"order_id"`
		CustomerID string `json:"customer_id"`
		ActionID   string `json:"action_id"`
	}
	_ = json.Unmarshal(args, &ids)
	var out []ocsfResource
	for _, r := range []ocsfResource{{"order", ids.OrderID}, {"customer", ids.CustomerID}, {"action", ids.ActionID}} {
		if r.UID != "" {
			out = append(out, r)
		}
	}
	return out
}

func jsonOrNil(b json.RawMessage) json.RawMessage {
	if !json.Valid(b) {
		return nil
	}
	return b
}

package admin

import (
	"net/http"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auth"
	"github.com/mandatehq/mandate/storage"
	"github.com/mandatehq/mandate/tools"
)

// The kill switch on the admin page: the agents suspended now, a form to
// suspend one and a button to resume each, and the recent history. Who may
// use them is the policy's (suspend_agent, resume_agent), decided by
// tools.Suspend and tools.Resume like the CLI's; the page only shows them
// to approvers, and every form carries the session's CSRF token.

type agentsData struct {
	Active  []*storage.Suspension
	History []*storage.Suspension
	Agents  []string
	Error   string
	Notice  string
}

func (s *Server) agents(w http.ResponseWriter, r *http.Request, sess *session) {
	s.renderAgents(w, r, sess, http.StatusOK, agentsData{Notice: r.URL.Query().Get("done")})
}

func (s *Server) renderAgents(w http.ResponseWriter, r *http.Request, sess *session, code int, d agentsData) {
	ctx := r.Context()
	var err error
	if d.Active, err = s.cfg.Deps.DB.ActiveSuspensions(ctx); err != nil {
		s.fail(w, err)
		return
	}
	if d.History, err = s.cfg.Deps.DB.Suspensions(ctx, "", 20); err != nil {
		s.fail(w, err)
		return
	}
	d.Agents = tools.Agents(s.cfg.Deps.Policy.Policy())
	switch d.Notice {
	case "suspended", "resumed":
		d.Notice = "The agent was " + d.Notice + " on every server sharing this database."
	default:
		d.Notice = ""
	}
	s.render(w, code, "agents", page{Title: "Agents", User: sess.User, CSRF: sess.CSRF, Approver: sess.role == auth.Approver, Nav: "agents", Data: d})
}

// suspend suspends the form's agent as the signed-in person.
func (s *Server) suspend(w http.ResponseWriter, r *http.Request, sess *session) {
	agent := strings.TrimSpace(r.PostFormValue("agent"))
	_, err := tools.Suspend(r.Context(), s.cfg.Deps, sess.User, agent, r.PostFormValue("reason"), r.PostFormValue("actions_only") != "")
	s.afterSwitch(w, r, sess, "suspended", agent, err)
}

// resume lifts the suspension of the agent in the path.
func (s *Server) resume(w http.ResponseWriter, r *http.Request, sess *session) {
	agent := r.PathValue("agent")
	_, err := tools.Resume(r.Context(), s.cfg.Deps, sess.User, agent)
	s.afterSwitch(w, r, sess, "resumed", agent, err)
}

func (s *Server) afterSwitch(w http.ResponseWriter, r *http.Request, sess *session, done, agent string, err error) {
	s.cfg.Logger.Info("kill switch", "user", sess.User, "agent", agent, "done", done, "err", err)
	if err == nil {
		http.Redirect(w, r, "/agents?done="+done, http.StatusSeeOther)
		return
	}
	code := http.StatusConflict
	switch mandate.ErrorCode(err) {
	case mandate.EDENIED:
		code = http.StatusForbidden
	case mandate.EINVALID:
		code = http.StatusBadRequest
	case mandate.ENOTFOUND:
		code = http.StatusNotFound
	case mandate.EUNAVAILABLE, mandate.EINTERNAL:
		code = http.StatusServiceUnavailable
	}
	s.renderAgents(w, r, sess, code, agentsData{Error: mandate.ErrorMessage(err)})
}

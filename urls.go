package mandate

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// URLHost is the scheme and host of the URL s, for logs and messages: the
// path or query of a webhook or receiver URL may be a credential (a Slack
// incoming webhook's path is). "" when s is no URL with a host.
func URLHost(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// RefuseRedirects is an http.Client's CheckRedirect that follows none: Go
// would send a request again to wherever a 307 or 308 points, with its
// body and (to the same host or a subdomain, plain http too) its
// Authorization header. What Mandate sends (a change, a credential, a
// notification) goes only to the URL the operator configured; the
// redirect comes back as the answer, which is not a success.
func RefuseRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// WithoutURL is err with the URL of a failed HTTP request cut down to its
// scheme and host: net/http's *url.Error prints the whole URL ("Post
// \"https://hooks.example/T0/B0/SECRET\": ..."), and errors end up in logs.
func WithoutURL(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	host := URLHost(ue.URL)
	if host == "" {
		host = "the URL"
	}
	return fmt.Errorf("%s %s/…: %w", ue.Op, host, ue.Err)
}

package ctl

import (
	"fmt"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// explanation is what a failed command adds to the hub's status: what was asked, by whom, and the
// role it needs.
type explanation struct {
	command string // "clusters approve"
	role    string // roleViewer or roleAdmin
	who     string // the caller's identity
	// issuerNote, when not empty, says that the caller's certificate does not chain to its CA
	// bundle.
	issuerNote string
}

// hubError is an error of the hub turned into a sentence for the user; it still wraps the gRPC
// status.
type hubError struct {
	msg string
	err error
}

func (e *hubError) Error() string { return e.msg }
func (e *hubError) Unwrap() error { return e.err }

// roleHelp says who holds each role.
var roleHelp = map[string]string{
	roleViewer: "the viewer role (any user certificate of the hub's trust domain)",
	roleAdmin:  "the admin role (a user named in the hub's --admin-users)",
}

// explain turns the hub's status codes into what the user can do about them. It is the one place
// hubctl reads gRPC codes.
func (o *options) explain(err error, e explanation) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("ask hub %s: %w", o.hub, err)
	}
	var msg string
	switch st.Code() {
	case codes.PermissionDenied:
		msg = fmt.Sprintf("%s needs %s; hub %s refused %s: %s", e.command, roleHelp[e.role], o.hub, e.who, st.Message())
	case codes.Unauthenticated:
		msg = fmt.Sprintf("hub %s did not accept %s: %s; use a certificate issued by the hub's CA (--credentials-dir)", o.hub, e.who, st.Message())
	case codes.DeadlineExceeded:
		msg = fmt.Sprintf("ask hub %s: no answer within --timeout %s: %s", o.hub, o.timeout, st.Message())
	case codes.Unavailable:
		msg = fmt.Sprintf("ask hub %s: unavailable: %s", o.hub, st.Message())
		switch m := st.Message(); {
		case strings.Contains(m, "authentication handshake failed"):
			// The hub's certificate did not verify.
			msg += fmt.Sprintf("; check that --hub is the hub's admin address (port 8472 by default), that %s is the hub's CA and that the hub's certificate names %q (else --tls-server-name)", filepath.Join(o.credentialsDir, tlsconfig.CAFile), o.tlsServerName)
		case e.issuerNote != "":
			// In TLS 1.3 a server refusing the client's certificate only breaks the connection.
			msg += "; " + e.issuerNote + ": the hub refuses client certificates its client CA did not issue"
		case strings.Contains(m, "remote error: tls") || strings.Contains(m, "broken pipe") || strings.Contains(m, "connection reset") || strings.Contains(m, "EOF"):
			msg += fmt.Sprintf("; if the hub refused the client certificate in %s, check that the hub's client CA issued it", filepath.Join(o.credentialsDir, tlsconfig.CertFile))
		}
	default:
		msg = fmt.Sprintf("ask hub %s: %s: %s", o.hub, st.Code(), st.Message())
	}
	return &hubError{msg: msg, err: err}
}

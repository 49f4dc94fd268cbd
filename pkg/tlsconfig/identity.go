package tlsconfig

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ErrInvalidIdentity is wrapped by every error of ParseIdentity and IdentityOf.
var ErrInvalidIdentity = errors.New("invalid identity")

// The kinds of Identity.
const (
	// KindCluster names a spoke: its Name is the cluster ID.
	KindCluster = "cluster"
	// KindUser names a hubctl user.
	KindUser = "user"
	// KindHub names a hub replica: its Name is the replica's hub ID. Replicas present it to
	// each other on the admin port (PeerService).
	KindHub = "hub"
)

const scheme = "spiffe://"

// Identity is who a peer is, as its certificate's URI SAN spiffe://<TrustDomain>/<Kind>/<Name>
// says. The zero Identity is nobody: it is not valid.
type Identity struct {
	// TrustDomain is the domain of the authority that issued the certificate, a DNS-1123
	// subdomain such as "spillway.example.com".
	TrustDomain string
	// Kind is KindCluster, KindUser or KindHub.
	Kind string
	// Name is the cluster ID, the user name or the hub ID, a DNS-1123 label.
	Name string
}

// String gives the identity's URI, spiffe://<TrustDomain>/<Kind>/<Name>.
func (id Identity) String() string {
	return scheme + id.TrustDomain + "/" + id.Kind + "/" + id.Name
}

// URL gives the identity's URI as a certificate carries it.
func (id Identity) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/" + id.Kind + "/" + id.Name}
}

// validate reports whether id is one ParseIdentity accepts.
func (id Identity) validate() error {
	parsed, err := ParseIdentity(id.String())
	if err != nil {
		return err
	}
	if parsed != id {
		return fmt.Errorf("%w: %q does not read back as itself", ErrInvalidIdentity, id.String())
	}
	return nil
}

// ParseIdentity reads a URI of the form spiffe://<trust-domain>/cluster/<id> or
// spiffe://<trust-domain>/user/<name>, exactly: the scheme is lower-case spiffe, the trust domain
// a DNS-1123 subdomain without user information or port, the name a DNS-1123 label, and there is
// neither a query, a fragment, percent-encoding nor any other path segment. Every accepted URI is
// the String of the Identity returned.
func ParseIdentity(uri string) (Identity, error) {
	invalid := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("%w %q: %s", ErrInvalidIdentity, uri, fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(uri, scheme)
	if !ok {
		return invalid("want a URI starting with %s", scheme)
	}
	switch {
	case strings.ContainsAny(rest, "?#"):
		return invalid("a query or fragment is not allowed")
	case strings.Contains(rest, "%"):
		return invalid("percent-encoding is not allowed")
	}
	td, path, _ := strings.Cut(rest, "/")
	switch {
	case td == "":
		return invalid("the trust domain is empty")
	case strings.Contains(td, "@"):
		return invalid("user information is not allowed")
	case strings.Contains(td, ":"):
		return invalid("a port is not allowed")
	}
	if errs := validation.IsDNS1123Subdomain(td); len(errs) > 0 {
		return invalid("trust domain %q: %s", td, strings.Join(errs, "; "))
	}
	segments := strings.Split(path, "/")
	if len(segments) != 2 || (segments[0] != KindCluster && segments[0] != KindUser && segments[0] != KindHub) {
		return invalid("want the path /%s/<id>, /%s/<name> or /%s/<id>", KindCluster, KindUser, KindHub)
	}
	kind, name := segments[0], segments[1]
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return invalid("%s name %q: %s", kind, name, strings.Join(errs, "; "))
	}
	return Identity{TrustDomain: td, Kind: kind, Name: name}, nil
}

// IdentityOf reads the identity of a certificate's holder from its one spiffe URI SAN. URI SANs
// of other schemes are ignored; none or several spiffe ones is an error. It does not verify the
// certificate: give it a peer certificate the TLS handshake verified.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrInvalidIdentity)
	}
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("%w: certificate %q has no spiffe:// URI SAN", ErrInvalidIdentity, cert.Subject.CommonName)
	case 1:
		return ParseIdentity(found[0].String())
	default:
		return Identity{}, fmt.Errorf("%w: certificate %q has %d spiffe:// URI SANs, want exactly one", ErrInvalidIdentity, cert.Subject.CommonName, len(found))
	}
}

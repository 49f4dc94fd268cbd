package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// The validity of user certificates the hub issues (admin.proto).
const (
	defaultUserCertValidity = 720 * time.Hour
	maxUserCertValidity     = 8760 * time.Hour
)

// userOptions are the flags of `users create`.
type userOptions struct {
	validity time.Duration
	out      string
}

// validate checks the user name and the flags, reporting every problem at once.
func (u *userOptions) validate(name string) error {
	var errs []error
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("user name %q: %s", name, strings.Join(msgs, "; ")))
	}
	if u.out == "" {
		errs = append(errs, errors.New("--out is required: the directory to write ca.crt, tls.crt and tls.key to"))
	}
	if u.validity <= 0 || u.validity > maxUserCertValidity {
		errs = append(errs, fmt.Errorf("--validity %s: want more than 0 and at most %s", u.validity, maxUserCertValidity))
	}
	return errors.Join(errs...)
}

// credentialFiles are the files `users create` writes, in the order it writes them.
var credentialFiles = []string{tlsconfig.CAFile, tlsconfig.CertFile, tlsconfig.KeyFile}

// checkFree refuses a directory that holds any of the credential files, or that is not a
// directory: `users create` never overwrites credentials.
func checkFree(dir string) error {
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--out: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("--out %s is not a directory", dir)
	}
	var present []string
	for _, name := range credentialFiles {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			present = append(present, name)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--out: %w", err)
		}
	}
	if len(present) > 0 {
		return fmt.Errorf("--out %s already holds %s: hubctl does not overwrite credentials; choose another directory or remove them", dir, strings.Join(present, ", "))
	}
	return nil
}

// writeCredentialsDir writes the CA bundle, the certificate and the key into dir (made with mode
// 0700 when absent); the key is 0600. No file is overwritten, and on an error the files written
// are removed.
func writeCredentialsDir(dir string, caPEM, certPEM, keyPEM []byte) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				_ = os.Remove(p)
			}
		}
	}()
	data := map[string][]byte{tlsconfig.CAFile: caPEM, tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM}
	for _, name := range credentialFiles {
		mode := os.FileMode(0o644)
		if name == tlsconfig.KeyFile {
			mode = 0o600
		}
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		written = append(written, p)
		_, werr := f.Write(data[name])
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// checkIssued checks that the hub's certificate names id and is for keyPEM, and returns it.
func checkIssued(id tlsconfig.Identity, certPEM, keyPEM []byte) (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the hub's certificate does not match the key made for it: %w", err)
	}
	if pair.Leaf == nil { // GODEBUG x509keypairleaf=0
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("the hub's certificate: %w", err)
		}
	}
	got, err := tlsconfig.IdentityOf(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("the hub's certificate: %w", err)
	}
	if got != id {
		return nil, fmt.Errorf("the hub's certificate names %s, not %s as asked", got, id)
	}
	return pair.Leaf, nil
}

func (o *options) usersCommand() *cobra.Command {
	users := &cobra.Command{Use: "users", Aliases: []string{"user"}, Short: "Credentials of other operators, from the hub's CA (admin)"}
	u := &userOptions{}
	create := &cobra.Command{
		Use:   "create NAME --out DIR [--validity 720h]",
		Short: "Issue hubctl credentials for user NAME from the hub's CA and write them to DIR",
		Long: "Make a key and a certificate request for spiffe://<your trust domain>/user/NAME here, have\n" +
			"the hub's CA sign it, and write DIR/ca.crt, DIR/tls.crt and DIR/tls.key (mode 0600; DIR is\n" +
			"made with mode 0700). The key never leaves this machine: hand DIR to the user over a channel\n" +
			"you trust. NAME is a viewer unless it is in the hub's --admin-users. Existing files are never\n" +
			"overwritten. The hub must hold its CA key (its own --pki-dir, or --ca-key-file).",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("%s takes one user name, got %d arguments", commandName(cmd), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := u.validate(name); err != nil {
				return err
			}
			if err := checkFree(u.out); err != nil {
				return err
			}
			return o.ask(cmd, roleAdmin, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				me, err := c.WhoAmI(ctx, &pb.WhoAmIRequest{})
				if err != nil {
					return err
				}
				caller, err := tlsconfig.ParseIdentity(me.GetIdentity())
				if err != nil {
					return fmt.Errorf("the hub names you %q: %w", me.GetIdentity(), err)
				}
				id := tlsconfig.Identity{TrustDomain: caller.TrustDomain, Kind: tlsconfig.KindUser, Name: name}
				csrPEM, keyPEM, err := tlsconfig.NewCSR(id)
				if err != nil {
					return err
				}
				resp, err := c.IssueUserCertificate(ctx, &pb.IssueUserCertificateRequest{CsrPem: csrPEM, Validity: durationpb.New(u.validity)})
				if err != nil {
					return err
				}
				cert, err := checkIssued(id, resp.GetCertificatePem(), keyPEM)
				if err != nil {
					return err
				}
				if err := writeCredentialsDir(u.out, resp.GetCaBundlePem(), resp.GetCertificatePem(), keyPEM); err != nil {
					return err
				}
				return o.printUserCreated(w, id, cert.NotAfter, u.out, resp)
			})
		},
	}
	create.Flags().DurationVar(&u.validity, "validity", defaultUserCertValidity, "how long the certificate is valid (at most 8760h; it ends with the hub's CA if that is sooner)")
	create.Flags().StringVar(&u.out, "out", "", "directory to write ca.crt, tls.crt and tls.key to (made when absent; existing files are not overwritten)")
	users.AddCommand(create)
	return users
}

func (o *options) printUserCreated(w io.Writer, id tlsconfig.Identity, notAfter time.Time, dir string, resp *pb.IssueUserCertificateResponse) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "Identity:\t%s\n", id)
	fmt.Fprintf(tw, "Role:\t%s\n", dash(resp.GetRole()))
	fmt.Fprintf(tw, "Expires:\t%s (%s)\n", notAfter.UTC().Format(time.RFC3339), o.until(notAfter))
	fmt.Fprintf(tw, "Written:\t%s, %s, %s (the key, mode 0600)\n",
		filepath.Join(dir, tlsconfig.CAFile), filepath.Join(dir, tlsconfig.CertFile), filepath.Join(dir, tlsconfig.KeyFile))
	if err := tw.Flush(); err != nil {
		return err
	}
	hub := ""
	if o.hub != DefaultHub {
		hub = " --hub " + shellQuote(o.hub)
	}
	_, err := fmt.Fprintf(w, "\ntls.key is a secret: hand %s to %s over a channel you trust. It works with:\n  hubctl%s --credentials-dir %s whoami\n",
		dir, id.Name, hub, shellQuote(dir))
	return err
}

// shellQuote quotes s for a POSIX shell when it holds anything but safe characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,[]") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

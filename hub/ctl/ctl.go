// Package ctl is hubctl: the operator's view of the fleet and the admin's hand on it, through the
// AdminService on the hub's admin port.
//
// hubctl authenticates with a client certificate: the credentials directory (--credentials-dir,
// else $SPILLWAY_CREDENTIALS, else hub-pki/hubctl, where a hub writes admin credentials at its
// first start) holds ca.crt, the CA bundle that verifies the hub, and tls.crt and tls.key, the
// user's certificate (URI SAN spiffe://<trust-domain>/user/<name>) and key. They are read once:
// hubctl is short-lived, so a rotation takes effect at the next command. The hub decides the
// caller's role from that certificate: a user named in the hub's --admin-users is an admin, any
// other user of the trust domain a viewer. Viewers read (whoami, get, clusters requests); admins
// also write (tokens create, clusters approve and revoke, cordon and uncordon, hopkey rotate, users create, which hands
// another operator credentials from the hub's CA). A refusal says which role the command needs.
//
// Contexts: a configuration file (--config, else $SPILLWAY_HUBCTL_CONFIG, else
// ~/.config/spillway/hubctl.yaml) names fleets, each with its --hub, --credentials-dir and
// --tls-server-name; --context picks one, else the file's current context (hubctl config). A flag
// on the command line, and $SPILLWAY_CREDENTIALS, come before the context.
//
// Every command prints a table by default and the hub's answer as JSON or YAML with -o.
//
// Hub replicas: --hub takes a comma-separated list of admin addresses. hubctl asks them in a
// random order (operators spread over the replicas), each verified for its own host (or
// --tls-server-name), each given --timeout; when one does not answer (unreachable, not ready,
// no answer in time) the next is asked, and a command fails only when every one failed, with
// each one's reason. An answer, even a refusal, is final.
package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/cli-runtime/pkg/printers"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

const (
	// DefaultHub is the admin address of a hub on this machine, as `make demo` runs it.
	DefaultHub = "127.0.0.1:8472"
	// DefaultCredentialsDir is where a hub started in the current directory writes hubctl's
	// admin credentials (<pki-dir>/hubctl with the default --pki-dir).
	DefaultCredentialsDir = "hub-pki/hubctl"
	// CredentialsEnv names the environment variable read when --credentials-dir is not given.
	CredentialsEnv = "SPILLWAY_CREDENTIALS"
)

// The roles the hub grants (docs/security.md); each command says which one it needs.
const (
	roleViewer = "viewer"
	roleAdmin  = "admin"
)

// options are hubctl's global flags, completed from the environment before a command runs.
type options struct {
	hub            string
	credentialsDir string
	tlsServerName  string
	config         string
	contextName    string
	output         string
	noHeaders      bool
	timeout        time.Duration

	now func() time.Time
	// streaming is set by a command that prints as it goes (get -w): it has no --timeout.
	streaming bool
	getenv    func(string) string
}

// NewCommand returns hubctl's root command.
func NewCommand() *cobra.Command {
	o := &options{now: time.Now, getenv: os.Getenv}
	root := &cobra.Command{
		Use:   "hubctl",
		Short: "Inspect and administer a Spillway fleet through its hub",
		Long: "hubctl talks to the hub's admin port with the client certificate in --credentials-dir.\n" +
			"Viewers may read; admins (the hub's --admin-users) may also create join tokens, approve and\n" +
			"revoke clusters, rotate the hop key and issue credentials to other operators.",
		SilenceUsage: true,
	}
	fs := root.PersistentFlags()
	fs.StringVar(&o.hub, "hub", DefaultHub, "host:port of the hub's admin address; several, comma-separated, for hub replicas (asked in a random order until one answers)")
	fs.StringVar(&o.credentialsDir, "credentials-dir", "",
		"directory holding ca.crt (the hub's CA), tls.crt and tls.key (your client certificate and key) (default $"+CredentialsEnv+", else "+DefaultCredentialsDir+")")
	fs.StringVar(&o.config, "config", "", "hubctl's configuration file of named contexts (default $"+ConfigEnv+", else ~/.config/spillway/hubctl.yaml)")
	fs.StringVar(&o.contextName, "context", "", "the context of the configuration file to use (default: its current context)")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "name to verify the hub's certificate for (default: the host of each --hub address)")
	fs.StringVarP(&o.output, "output", "o", outputTable, "output format: table, wide (get: more columns), json, yaml or jsonpath=TEMPLATE (kubectl's JSONPath, on the JSON form)")
	fs.BoolVar(&o.noHeaders, "no-headers", false, "print tables without their header (get)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for each hub address")

	root.AddCommand(o.whoamiCommand(), o.versionCommand(), o.getCommand(), o.statusCommand(), o.describeCommand(), o.explainCommand(), o.cordonCommand(true), o.cordonCommand(false), o.configCommand(), o.tokensCommand(), o.clustersCommand(), o.hopkeyCommand(), o.usersCommand())
	return root
}

// complete fills in what the user left to the environment, the configuration's context and
// other flags: a flag first, then the environment, then the context, then the default.
func (o *options) complete(cmd *cobra.Command) error {
	if err := o.applyContext(cmd); err != nil {
		return err
	}
	if o.credentialsDir == "" {
		o.credentialsDir = o.getenv(CredentialsEnv)
	}
	if o.credentialsDir == "" {
		o.credentialsDir = DefaultCredentialsDir
	}
	return nil
}

// validate checks the global flags, reporting every problem at once.
func (o *options) validate() error {
	var errs []error
	switch tmpl, isPath := strings.CutPrefix(o.output, jsonpathArg); {
	case isPath:
		if _, err := printers.NewJSONPathPrinter(tmpl); err != nil {
			errs = append(errs, fmt.Errorf("--output %q: %w", o.output, err))
		}
	case o.output == outputTable, o.output == outputWide, o.output == outputJSON, o.output == outputYAML:
	default:
		errs = append(errs, fmt.Errorf("--output %q: want table, wide, json, yaml or jsonpath=TEMPLATE", o.output))
	}
	if _, err := parseHubs(o.hub); err != nil {
		errs = append(errs, err)
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s: want a positive duration", o.timeout))
	}
	return errors.Join(errs...)
}

// call is one exchange with the hub, which prints its answer to w.
type call func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error

// ask runs call against the hub as the user of the credentials directory; role is the role the
// command needs, named when the hub refuses.
func (o *options) ask(cmd *cobra.Command, role string, run call) error {
	if err := o.complete(cmd); err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	creds, err := loadCredentials(o.credentialsDir, o.now())
	if err != nil {
		return err
	}
	hubs, err := parseHubs(o.hub)
	if err != nil {
		return err
	}
	var failed []error
	for _, addr := range hubOrder(hubs, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))) {
		// This replica's answer, printed only if it is the one that counts.
		var out bytes.Buffer
		err := o.askOne(cmd.Context(), addr, creds, run, &out)
		if err == nil {
			_, err = out.WriteTo(cmd.OutOrStdout())
			return err
		}
		// The explanation names the replica asked and the name it was verified for.
		one := *o
		one.hub, one.tlsServerName = addr, o.serverNameFor(addr)
		failed = append(failed, one.explain(err, explanation{command: commandName(cmd), role: role, who: creds.who(), issuerNote: creds.issuerNote()}))
		if !tryNext(err) || cmd.Context().Err() != nil {
			break
		}
	}
	if len(failed) == 1 {
		return failed[0]
	}
	return errors.Join(failed...)
}

// askOne runs call against the hub replica at addr, within --timeout.
func (o *options) askOne(ctx context.Context, addr string, creds *clientCredentials, run call, w io.Writer) error {
	// Lists come in pages and view updates in parts of about 1 MiB; one pool of a thousand
	// members with per-endpoint detail can still be larger.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(creds.clientConfig(o.serverNameFor(addr)))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("hub %q: %w", addr, err)
	}
	defer conn.Close()
	if !o.streaming {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	return run(ctx, pb.NewAdminServiceClient(conn), w)
}

// commandName is the command as the user typed it, without the binary's name: "clusters approve".
func commandName(cmd *cobra.Command) string {
	name := cmd.Name()
	for p := cmd.Parent(); p != nil && p.HasParent(); p = p.Parent() {
		name = p.Name() + " " + name
	}
	return name
}

package ctl

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/util/validation"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// maxTokenTTL is the longest bootstrap token the hub issues (admin.proto).
const maxTokenTTL = 24 * time.Hour

func (o *options) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Your identity and role, as the hub reads them from your certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.ask(cmd, roleViewer, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.WhoAmI(ctx, &pb.WhoAmIRequest{})
				if err != nil {
					return err
				}
				return o.printWhoAmI(w, resp)
			})
		},
	}
}

func (o *options) printWhoAmI(w io.Writer, resp *pb.WhoAmIResponse) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tROLE")
	fmt.Fprintf(tw, "%s\t%s\n", resp.GetIdentity(), dash(resp.GetRole()))
	return tw.Flush()
}

// tokenOptions are the flags of `tokens create`.
type tokenOptions struct {
	clusters    []string
	ttl         time.Duration
	autoApprove bool
}

// validate checks the flags and returns the cluster IDs sorted, without duplicates.
func (t *tokenOptions) validate() ([]string, error) {
	var errs []error
	if len(t.clusters) == 0 {
		errs = append(errs, errors.New("--cluster is required: name the cluster (or clusters) the token may join"))
	}
	ids := slices.Clone(t.clusters)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if err := validClusterID(id); err != nil {
			errs = append(errs, fmt.Errorf("--cluster: %w", err))
		}
	}
	if t.ttl <= 0 || t.ttl > maxTokenTTL {
		errs = append(errs, fmt.Errorf("--ttl %s: want more than 0 and at most %s", t.ttl, maxTokenTTL))
	}
	return ids, errors.Join(errs...)
}

func validClusterID(id string) error {
	if msgs := validation.IsDNS1123Label(id); len(msgs) > 0 {
		return fmt.Errorf("cluster ID %q: %s", id, strings.Join(msgs, "; "))
	}
	return nil
}

func (o *options) tokensCommand() *cobra.Command {
	tokens := &cobra.Command{Use: "tokens", Aliases: []string{"token"}, Short: "Bootstrap tokens that let spokes join the fleet (admin)"}
	t := &tokenOptions{}
	create := &cobra.Command{
		Use:   "create --cluster ID [--cluster ID2] [--ttl 1h] [--auto-approve]",
		Short: "Create a bootstrap token for the join flow and print the spoke flags that use it",
		Long: "Create a short-lived bootstrap token scoped to the given cluster IDs. A spoke started with\n" +
			"--join-token and --hub-ca-hash sends the hub a certificate request, which an admin approves\n" +
			"with `hubctl clusters approve ID` (or which the hub signs at once with --auto-approve).\n" +
			"The hub keeps only a hash of the token: it is shown once.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ids, err := t.validate()
			if err != nil {
				return err
			}
			return o.ask(cmd, roleAdmin, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: ids, Ttl: durationpb.New(t.ttl), AutoApprove: t.autoApprove})
				if err != nil {
					return err
				}
				return o.printToken(w, resp, ids, t.autoApprove)
			})
		},
	}
	create.Flags().StringSliceVar(&t.clusters, "cluster", nil, "cluster ID the token may join; repeatable, or comma-separated")
	create.Flags().DurationVar(&t.ttl, "ttl", time.Hour, "how long the token may be used (at most 24h)")
	create.Flags().BoolVar(&t.autoApprove, "auto-approve", false, "let the hub sign a join with this token without hubctl clusters approve")
	tokens.AddCommand(create)
	return tokens
}

func (o *options) printToken(w io.Writer, resp *pb.CreateTokenResponse, ids []string, autoApprove bool) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	approval := "by an admin: hubctl clusters approve <cluster>"
	if autoApprove {
		approval = "automatic"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "Token:\t%s\n", resp.GetToken())
	fmt.Fprintf(tw, "Expires:\t%s (%s)\n", resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), o.until(resp.GetExpiresAt().AsTime()))
	fmt.Fprintf(tw, "CA hash:\t%s\n", resp.GetCaCertHash())
	fmt.Fprintf(tw, "Clusters:\t%s\n", strings.Join(ids, ", "))
	fmt.Fprintf(tw, "Approval:\t%s\n", approval)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nThe hub keeps only a hash of the token: it is shown this once. Start each cluster's spoke\nwith its --hub-address (the hub's spoke port, 8470 by default) and:")
	for _, id := range ids {
		fmt.Fprintf(w, "  --cluster-id %s --join-token %s --hub-ca-hash %s\n", id, resp.GetToken(), resp.GetCaCertHash())
	}
	return nil
}

func (o *options) clustersCommand() *cobra.Command {
	clusters := &cobra.Command{Use: "clusters", Aliases: []string{"cluster"}, Short: "Join requests, approval and revocation of clusters"}

	requests := &cobra.Command{
		Use:   "requests",
		Short: "Join requests, pending and decided (viewer)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.ask(cmd, roleViewer, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{})
				if err != nil {
					return err
				}
				return o.printJoinRequests(w, resp)
			})
		},
	}

	var keyFlag string
	approve := &cobra.Command{
		Use:   "approve ID [--public-key-sha256 HASH]",
		Short: "Approve a cluster's pending join request: the hub signs its certificate (admin)",
		Long: "Approve the pending join request of a cluster: the hub signs a certificate for the key of\n" +
			"the request. The approval names that key, so it never signs a key other than the one you\n" +
			"checked: --public-key-sha256 takes the key's SHA-256 as `hubctl clusters requests` shows it\n" +
			"(its first 16 hex digits are enough); without it, hubctl reads the request and approves the\n" +
			"key it holds now, which it prints.",
		Args: clusterIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := parseKeyHash(keyFlag)
			if err != nil {
				return err
			}
			return o.ask(cmd, roleAdmin, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				full, err := pendingKey(ctx, c, args[0], key)
				if err != nil {
					return err
				}
				resp, err := c.ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: args[0], PublicKeySha256: full})
				if err != nil {
					return err
				}
				return o.printApproved(w, args[0], resp)
			})
		},
	}
	approve.Flags().StringVar(&keyFlag, "public-key-sha256", "",
		"SHA-256 of the public key to approve, as `hubctl clusters requests` shows it (at least its first 16 hex digits); the hub refuses the approval if the request holds another key")

	var remove bool
	revoke := &cobra.Command{
		Use:   "revoke ID [--remove]",
		Short: "End a cluster's session and refuse its certificates from now on (admin)",
		Long: "Revoke a cluster: the hub ends its session at once, its exports are withdrawn after the\n" +
			"usual damping, and every certificate of the cluster issued before now is refused. With\n" +
			"--remove the cluster's record is also deleted once its exports are withdrawn.",
		Args: clusterIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.ask(cmd, roleAdmin, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: args[0], Remove: remove})
				if err != nil {
					return err
				}
				return o.printRevoked(w, args[0], remove, resp)
			})
		},
	}
	revoke.Flags().BoolVar(&remove, "remove", false, "also delete the cluster's record once its exports are withdrawn")

	clusters.AddCommand(requests, approve, revoke)
	return clusters
}

// clusterIDArg accepts exactly one argument, a cluster ID.
func clusterIDArg(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%s takes one cluster ID, got %d arguments", commandName(cmd), len(args))
	}
	return validClusterID(args[0])
}

// minKeyHashDigits is the shortest prefix of a key's SHA-256 that --public-key-sha256 takes: what
// `clusters requests` shows.
const minKeyHashDigits = 16

// parseKeyHash reads --public-key-sha256: hex digits (upper or lower case), the whole SHA-256 or
// a prefix of at least minKeyHashDigits, with an optional "sha256:" before and the "…" of
// `clusters requests` after. It returns them in lower case; "" when the flag was not given.
func parseKeyHash(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	h := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(v, "sha256:"), "…"))
	if len(h) < minKeyHashDigits || len(h) > sha256.Size*2 {
		return "", fmt.Errorf("--public-key-sha256 %q: want the key's SHA-256 in hex as hubctl clusters requests shows it, at least its first %d digits", v, minKeyHashDigits)
	}
	if strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("--public-key-sha256 %q: not hex", v)
	}
	return h, nil
}

// pendingKey returns the full SHA-256 of the key that the approval of cluster's request names:
// the request's key as the hub lists it now, which must start with want when want is given. A
// whole SHA-256 given is sent as it is; without a request to read, the hub's answer says why.
func pendingKey(ctx context.Context, c pb.AdminServiceClient, cluster, want string) (string, error) {
	if len(want) == sha256.Size*2 {
		return want, nil
	}
	reqs, err := c.ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{})
	if err != nil {
		return "", err
	}
	for _, r := range reqs.GetRequests() {
		if r.GetClusterId() != cluster {
			continue
		}
		if !strings.HasPrefix(r.GetPublicKeySha256(), want) {
			return "", fmt.Errorf("the join request of cluster %s holds public key sha256 %s, not %s…: check the request again (hubctl clusters requests)",
				cluster, r.GetPublicKeySha256(), want)
		}
		return r.GetPublicKeySha256(), nil
	}
	if want != "" {
		return "", fmt.Errorf("cluster %s has no join request (requests vanish with their token): hubctl clusters requests", cluster)
	}
	return "", nil
}

func (o *options) printJoinRequests(w io.Writer, resp *pb.ListJoinRequestsResponse) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tSTATE\tTOKEN\tREQUESTED\tPUBLIC KEY SHA-256\tFROM")
	for _, r := range resp.GetRequests() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.GetClusterId(), joinStateName(r.GetState()), dash(r.GetTokenId()),
			o.age(r.GetRequestedAt().AsTime(), r.GetRequestedAt() != nil), dash(shortHash(r.GetPublicKeySha256())), dash(r.GetPeerAddress()))
	}
	return tw.Flush()
}

// shortHash keeps the first 16 hex digits of a key hash, enough to compare with what the spoke
// logged; -o json shows all of it.
func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

func (o *options) printApproved(w io.Writer, id string, resp *pb.ApproveClusterResponse) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	r := resp.GetRequest()
	_, err := fmt.Fprintf(w, "cluster %s: join request %s (token %s, public key sha256 %s, from %s); the spoke gets its certificate at its next join attempt\n",
		id, strings.ToLower(joinStateName(r.GetState())), dash(r.GetTokenId()), dash(r.GetPublicKeySha256()), dash(r.GetPeerAddress()))
	return err
}

func (o *options) printRevoked(w io.Writer, id string, remove bool, resp *pb.RevokeClusterResponse) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	msg := fmt.Sprintf("cluster %s revoked at %s: its session is ended and its certificates issued until then are refused",
		id, resp.GetRevokedAt().AsTime().UTC().Format(time.RFC3339))
	if remove {
		msg += "; its record is deleted once its exports are withdrawn"
	}
	_, err := fmt.Fprintln(w, msg)
	return err
}

func (o *options) hopkeyCommand() *cobra.Command {
	hopkey := &cobra.Command{Use: "hopkey", Short: "The fleet key that signs hop markers of spilled requests (admin)"}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new hop key that signs from now on; the previous one is accepted until the next rotation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.ask(cmd, roleAdmin, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.RotateHopKey(ctx, &pb.RotateHopKeyRequest{})
				if err != nil {
					return err
				}
				return o.printHopKey(w, resp)
			})
		},
	}
	hopkey.AddCommand(rotate)
	return hopkey
}

func (o *options) printHopKey(w io.Writer, resp *pb.RotateHopKeyResponse) error {
	if done, err := o.structured(w, resp); done {
		return err
	}
	_, err := fmt.Fprintf(w, "hop key %s signs hop markers from now on; the previous key is accepted until the next rotation\n", resp.GetKeyId())
	return err
}

func joinStateName(s pb.JoinState) string {
	switch s {
	case pb.JoinState_JOIN_STATE_PENDING:
		return "Pending"
	case pb.JoinState_JOIN_STATE_APPROVED:
		return "Approved"
	case pb.JoinState_JOIN_STATE_DENIED:
		return "Denied"
	}
	return "Unknown"
}

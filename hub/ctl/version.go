package ctl

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/spillway-io/spillway/pkg/buildinfo"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// versions is what `hubctl version` prints: its own build and the answering replica's.
type versions struct {
	Client buildinfo.Info `json:"client"`
	Hub    *hubVersion    `json:"hub,omitempty"`
}

type hubVersion struct {
	ID      string `json:"id"`
	Version string `json:"version"`
}

func (o *options) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "The build of hubctl and of the hub replica that answers (viewer)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versions{Client: buildinfo.Get()}
			if clientOnly {
				if err := o.complete(cmd); err != nil {
					return err
				}
				if err := o.validate(); err != nil {
					return err
				}
				return o.printVersions(cmd.OutOrStdout(), v)
			}
			err := o.ask(cmd, roleViewer, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.WhoAmI(ctx, &pb.WhoAmIRequest{})
				if err != nil {
					return err
				}
				v.Hub = &hubVersion{ID: resp.GetHubId(), Version: resp.GetHubVersion()}
				return o.printVersions(w, v)
			})
			if err != nil {
				// As kubectl does: the client's version, then why the hub's is missing.
				if perr := o.printVersions(cmd.OutOrStdout(), v); perr != nil {
					return perr
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print hubctl's build only, without asking the hub")
	return cmd
}

func (o *options) printVersions(w io.Writer, v versions) error {
	if !o.tabular() {
		return o.writeJSON(w, v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tNAME\tVERSION")
	fmt.Fprintf(tw, "client\thubctl\t%s\n", v.Client)
	if v.Hub != nil {
		fmt.Fprintf(tw, "hub\t%s\t%s\n", dash(v.Hub.ID), dash(v.Hub.Version))
	}
	return tw.Flush()
}

package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// cordonCommand is cordon (cordoned true) or uncordon: of a cluster or of a region.
func (o *options) cordonCommand(cordoned bool) *cobra.Command {
	verb, short := "cordon", "Stop spilling requests to a cluster or region (admin)"
	if !cordoned {
		verb, short = "uncordon", "Let spilled requests reach a cluster or region again (admin)"
	}
	cmd := &cobra.Command{
		Use:   verb + " cluster|region NAME",
		Short: short,
		Long: "A cordoned cluster keeps its session, exports and imports, and serves its own traffic; no spoke\n" +
			"sends it spilled requests. A region's cordon covers every cluster of the region, those that\n" +
			"register later too. Cordons are kept in the hub's registry and reach every spoke with the next\n" +
			"view update; `get clusters` shows them in STATE.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 || args[0] != "cluster" && args[0] != "region" {
				return fmt.Errorf("%s takes cluster NAME or region NAME, got %q", verb, strings.Join(args, " "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.SetCordonRequest{Cordoned: cordoned}
			if args[0] == "cluster" {
				req.ClusterId = args[1]
			} else {
				req.Region = args[1]
			}
			return o.ask(cmd, roleAdmin, func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
				resp, err := c.SetCordon(ctx, req)
				if err != nil {
					return err
				}
				if done, err := o.structured(w, resp); done {
					return err
				}
				state := "cordoned"
				if !cordoned {
					state = "uncordoned"
				}
				clusters := strings.Join(resp.GetClusters(), ", ")
				if clusters == "" {
					clusters = "no registered cluster"
				}
				_, err = fmt.Fprintf(w, "%s %s %s (%s)\n", args[0], args[1], state, clusters)
				return err
			})
		},
	}
	return cmd
}

package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func (o *options) getCommand() *cobra.Command {
	get := &cobra.Command{Use: "get", Short: "List fleet objects (viewer)"}
	get.AddCommand(
		o.getOne("clusters", []string{"cluster"}, "Registered clusters and their liveness", o.getClusters),
		o.getOne("pools", []string{"pool"}, "Exported pools with each member cluster's capacity", o.getPools),
		o.getOne("imports", []string{"import"}, "Which clusters export each pool", o.getImports),
		o.getOne("hubs", []string{"hub"}, "The hub replicas and which one leads", o.getHubs),
	)
	return get
}

func (o *options) getOne(use string, aliases []string, short string, run call) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   short,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return o.ask(cmd, roleViewer, run) },
	}
}

func (o *options) getClusters(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
	resp, err := c.ListClusters(ctx, &pb.ListClustersRequest{})
	if err != nil {
		return err
	}
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tREGION\tZONE\tSTATE\tEXPORTS\tGATEWAY\tHUB\tLAST SEEN")
	for _, cl := range resp.GetClusters() {
		i := cl.GetInfo()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", i.GetClusterId(), i.GetRegion(), dash(i.GetZone()),
			stateName(cl.GetState()), cl.GetExports(), dash(i.GetGatewayAddress()), dash(cl.GetHubId()),
			o.age(cl.GetLastSeen().AsTime(), cl.GetLastSeen() != nil))
	}
	return tw.Flush()
}

func (o *options) getPools(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
	resp, err := c.ListPools(ctx, &pb.ListPoolsRequest{})
	if err != nil {
		return err
	}
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tCLUSTER\tREGION\tSTATE\tREADY\tQUEUE\tRUNNING\tKV-CACHE\tSATURATION\tSPILL\tLORA\tREPORTED")
	for _, p := range resp.GetPools() {
		name := p.GetPool().GetNamespace() + "/" + p.GetPool().GetName()
		for _, m := range p.GetMembers() {
			row := []string{name, m.GetClusterId(), m.GetRegion(), stateName(m.GetState())}
			if rc := m.GetCapacity(); rc != nil {
				cp := rc.GetCapacity()
				sat := strconv.FormatFloat(cp.GetSaturation(), 'f', 2, 64)
				if cp.GetSaturated() {
					sat += " (saturated)"
				}
				row = append(row,
					fmt.Sprintf("%d/%d", cp.GetReadyEndpoints(), cp.GetTotalEndpoints()),
					strconv.Itoa(int(cp.GetQueueDepth())),
					strconv.Itoa(int(cp.GetRunningRequests())),
					fmt.Sprintf("%.0f%%", cp.GetKvCacheUtilization()*100),
					sat,
					spillState(cp),
					dash(strings.Join(cp.GetLoraAdapters(), ",")),
					o.capacityAge(rc))
			} else {
				row = append(row, "-", "-", "-", "-", "-", "-", "-", "never")
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	return tw.Flush()
}

// spillState renders a pool's spill state: "-" while local, "→ cluster (region)" while spilling.
func spillState(cp *pb.PoolCapacity) string {
	switch {
	case !cp.GetSpilling():
		return "-"
	case cp.GetSpillTarget() == "":
		return "spilling"
	}
	return fmt.Sprintf("→ %s (%s)", cp.GetSpillTarget(), cp.GetSpillTargetRegion())
}

func (o *options) getImports(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
	resp, err := c.ListImports(ctx, &pb.ListImportsRequest{})
	if err != nil {
		return err
	}
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tEXPORTING CLUSTERS")
	for _, i := range resp.GetImports() {
		cs := slices.Clone(i.GetExportingClusters())
		slices.Sort(cs)
		fmt.Fprintf(tw, "%s/%s\t%s\n", i.GetPool().GetNamespace(), i.GetPool().GetName(), strings.Join(cs, ","))
	}
	return tw.Flush()
}

func (o *options) getHubs(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
	resp, err := c.ListHubs(ctx, &pb.ListHubsRequest{})
	if err != nil {
		return err
	}
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HUB\tADDRESS\tLEADER\tINCARNATION\tSTARTED")
	for _, h := range resp.GetHubs() {
		leader := "-"
		if h.GetLeader() {
			leader = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.GetHubId(), dash(h.GetAdminAddress()), leader, dash(h.GetIncarnation()),
			o.age(h.GetStartedAt().AsTime(), h.GetStartedAt() != nil))
	}
	return tw.Flush()
}

func stateName(s pb.ClusterState) string {
	switch s {
	case pb.ClusterState_CLUSTER_STATE_ALIVE:
		return "Alive"
	case pb.ClusterState_CLUSTER_STATE_GONE:
		return "Gone"
	}
	return "Unknown"
}

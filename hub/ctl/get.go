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
	"google.golang.org/protobuf/proto"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func (o *options) getCommand() *cobra.Command {
	get := &cobra.Command{Use: "get", Short: "List fleet objects (viewer)"}
	get.AddCommand(
		o.getOne("clusters", []string{"cluster"}, "Registered clusters and their liveness", o.getClusters),
		o.getPoolsCommand(),
		o.getOne("imports", []string{"import"}, "Which clusters export each pool", o.getImports),
		o.getOne("hubs", []string{"hub"}, "The hub replicas and which one leads", o.getHubs),
	)
	return get
}

func (o *options) getPoolsCommand() *cobra.Command {
	watch := false
	cmd := &cobra.Command{
		Use:     "pools",
		Aliases: []string{"pool"},
		Short:   "Exported pools with each member cluster's capacity",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch {
				// The watch prints as it goes and lasts until interrupted: no --timeout.
				o.streaming = true
				return o.ask(cmd, roleViewer, o.watchPools(cmd.OutOrStdout()))
			}
			return o.ask(cmd, roleViewer, o.getPools)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the list, print the members that change as the hub reports them")
	return cmd
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
	resp, err := listAll(ctx, func(ctx context.Context, token string) (*pb.ListClustersResponse, error) {
		return c.ListClusters(ctx, &pb.ListClustersRequest{PageToken: token})
	})
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
	resp, err := listAll(ctx, func(ctx context.Context, token string) (*pb.ListPoolsResponse, error) {
		return c.ListPools(ctx, &pb.ListPoolsRequest{PageToken: token})
	})
	if err != nil {
		return err
	}
	if done, err := o.structured(w, resp); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, poolsHeader)
	for _, p := range resp.GetPools() {
		for _, m := range p.GetMembers() {
			fmt.Fprintln(tw, o.poolRow(p.GetPool(), m))
		}
	}
	return tw.Flush()
}

const poolsHeader = "POOL\tCLUSTER\tREGION\tSTATE\tREADY\tQUEUE\tRUNNING\tKV-CACHE\tSATURATION\tSPILL\tLORA\tREPORTED"

// poolRow renders one member of a pool as a row of poolsHeader's columns, tab-separated.
func (o *options) poolRow(pool *pb.PoolRef, m *pb.PoolMember) string {
	row := []string{pool.GetNamespace() + "/" + pool.GetName(), m.GetClusterId(), m.GetRegion(), stateName(m.GetState())}
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
	return strings.Join(row, "\t")
}

// pagedResponse is a list response that names its next page.
type pagedResponse interface {
	proto.Message
	GetNextPageToken() string
}

// listAll asks for every page of a list, one after the other, and returns them as one response.
func listAll[R pagedResponse](ctx context.Context, page func(ctx context.Context, token string) (R, error)) (R, error) {
	var all R
	token := ""
	for i := 0; ; i++ {
		resp, err := page(ctx, token)
		if err != nil {
			return all, err
		}
		if i == 0 {
			all = resp
		} else {
			proto.Merge(all, resp)
		}
		token = resp.GetNextPageToken()
		if token == "" {
			// The merged response names no next page: clear what a middle page set.
			all.ProtoReflect().Clear(all.ProtoReflect().Descriptor().Fields().ByName("next_page_token"))
			return all, nil
		}
	}
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
	resp, err := listAll(ctx, func(ctx context.Context, token string) (*pb.ListImportsResponse, error) {
		return c.ListImports(ctx, &pb.ListImportsRequest{PageToken: token})
	})
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

// Package ctl is hubctl: the operator's view of the fleet, read from the hub's AdminService.
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// DefaultHub is the hub address of `make demo`.
const DefaultHub = "127.0.0.1:8470"

type options struct {
	hub     string
	output  string
	timeout time.Duration
	now     func() time.Time
}

// NewCommand returns hubctl's root command.
func NewCommand() *cobra.Command {
	o := &options{now: time.Now}
	root := &cobra.Command{
		Use:           "hubctl",
		Short:         "Inspect a Spillway fleet through its hub",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.PersistentFlags().StringVar(&o.hub, "hub", DefaultHub, "host:port of the hub's gRPC address")
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")
	root.PersistentFlags().DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the hub")

	get := &cobra.Command{Use: "get", Short: "List fleet objects"}
	get.AddCommand(
		o.getCommand("clusters", []string{"cluster"}, "Registered clusters and their liveness", o.getClusters),
		o.getCommand("pools", []string{"pool"}, "Exported pools with each member cluster's capacity", o.getPools),
		o.getCommand("imports", []string{"import"}, "Which clusters export each pool", o.getImports),
	)
	root.AddCommand(get)
	return root
}

type getFunc func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error

func (o *options) getCommand(use string, aliases []string, short string, run getFunc) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   short,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch o.output {
			case "table", "json", "yaml":
			default:
				return fmt.Errorf("--output %q: want table, json or yaml", o.output)
			}
			conn, err := grpc.NewClient(o.hub, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return fmt.Errorf("hub %q: %w", o.hub, err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			if err := run(ctx, pb.NewAdminServiceClient(conn), cmd.OutOrStdout()); err != nil {
				return fmt.Errorf("ask hub %s: %w", o.hub, err)
			}
			return nil
		},
	}
}

// structured writes a message as JSON or YAML; it reports false for table output.
func (o *options) structured(w io.Writer, m proto.Message) (bool, error) {
	if o.output == "table" {
		return false, nil
	}
	raw, err := protojson.Marshal(m)
	if err != nil {
		return true, err
	}
	// protojson varies its whitespace on purpose; compact and indent for a stable output.
	var compact, js bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return true, err
	}
	if err := json.Indent(&js, compact.Bytes(), "", "  "); err != nil {
		return true, err
	}
	if o.output == "yaml" {
		y, err := yaml.JSONToYAML(js.Bytes())
		if err != nil {
			return true, err
		}
		_, err = w.Write(y)
		return true, err
	}
	_, err = fmt.Fprintln(w, js.String())
	return true, err
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
					o.age(rc.GetReceivedAt().AsTime(), rc.GetReceivedAt() != nil))
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

func (o *options) age(t time.Time, ok bool) string {
	if !ok {
		return "never"
	}
	d := max(o.now().Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh ago", int(d.Hours()))
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

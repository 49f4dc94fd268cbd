package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// getOptions are the flags of get's commands.
type getOptions struct {
	region   string
	selector string
	watch    bool
}

// matcher returns the label selector of -l (everything when it is empty).
func (g *getOptions) matcher() (labels.Selector, error) {
	sel, err := labels.Parse(g.selector)
	if err != nil {
		return nil, fmt.Errorf("-l %q: %w", g.selector, err)
	}
	return sel, nil
}

// noSelector refuses -l for what carries no labels.
func noSelector(run func(name string) call, what string, g *getOptions) func(name string) call {
	return func(name string) call {
		if g.selector != "" {
			return func(context.Context, pb.AdminServiceClient, io.Writer) error {
				return fmt.Errorf("-l selects clusters (by the spoke's --cluster-labels) and pool members (by the pool's labels); %s carry no labels", what)
			}
		}
		return run(name)
	}
}

// labelText renders labels as kubectl's --show-labels does: key=value, sorted, comma-separated.
func labelText(ls map[string]string) string {
	if len(ls) == 0 {
		return "<none>"
	}
	return labels.Set(ls).String()
}

func (o *options) getCommand() *cobra.Command {
	g := &getOptions{}
	get := &cobra.Command{Use: "get", Short: "List fleet objects (viewer)",
		Long: "List the fleet's clusters, pools, models, endpoints, imports and hub replicas, or one of them by name.\n" +
			"-o wide adds columns, --no-headers drops the header, -o jsonpath=TEMPLATE picks fields of the JSON form."}
	get.PersistentFlags().StringVar(&g.region, "region", "", "only the clusters (and pool members) of this region")
	get.PersistentFlags().StringVarP(&g.selector, "selector", "l", "", "label selector (key=value, key!=value, key in (a,b), key, !key): clusters by their labels (the spoke's --cluster-labels), pool members and endpoints by the pool's labels in that cluster")
	list := func(get func(*getOptions, string) call) func(string) call {
		return func(name string) call { return get(g, name) }
	}
	pools := o.getNamed("pools", []string{"pool"}, poolArg, "Exported pools with each member cluster's capacity", list(o.getPools))
	o.watchable(pools, g, watchPools, "after the list, print the members that change as the hub reports them", list(o.getPools))
	clusters := o.getNamed("clusters", []string{"cluster"}, "[NAME]", "Registered clusters and their liveness", list(o.getClusters))
	o.watchable(clusters, g, watchClusters, "after the list, print the clusters whose liveness changes as the hub reports them", list(o.getClusters))
	endpoints := o.getNamed("endpoints", []string{"endpoint", "ep"}, poolArg, "Each pool's endpoints with their load, from spokes that report them (--report-endpoints)",
		list(o.getEndpoints))
	o.watchable(endpoints, g, watchEndpoints, "after the list, print the endpoints of the members whose report changes", list(o.getEndpoints))
	imports := o.getNamed("imports", []string{"import"}, poolArg, "Which clusters export each pool", noSelector(o.getImports, "imports", g))
	o.watchable(imports, g, watchImports, "after the list, print the pools whose exporting clusters change", noSelector(o.getImports, "imports", g))
	models := o.getNamed("models", []string{"model"}, "[MODEL]", "Each model with the clusters, regions and pools that serve it", list(o.getModels))
	budgets := o.getNamed("budgets", []string{"budget"}, "[NAME]", "The fleet's token budgets: what the fleet used in the window, each cluster's usage, ceiling and share",
		noSelector(list(o.getBudgets), "budgets", g))
	get.AddCommand(
		clusters,
		pools,
		models,
		budgets,
		endpoints,
		imports,
		o.getNamed("hubs", []string{"hub"}, "", "The hub replicas and which one leads", noSelector(func(string) call { return o.getHubs }, "hub replicas", g)),
	)
	return get
}

// watchable gives a get command -w: after the list, the hub's Watch stream printed as rows of
// pool members or of clusters as they change.
func (o *options) watchable(cmd *cobra.Command, g *getOptions, kind watchKind, help string, list func(name string) call) {
	cmd.Flags().BoolVarP(&g.watch, "watch", "w", false, help)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !g.watch {
			return o.ask(cmd, roleViewer, list(firstArg(args)))
		}
		if len(args) > 0 || g.region != "" || g.selector != "" {
			return fmt.Errorf("get %s -w follows every one: give no name, no --region and no -l", kind)
		}
		// The watch prints as it goes and lasts until interrupted: no --timeout.
		o.streaming = true
		return o.ask(cmd, roleViewer, o.watch(cmd.OutOrStdout(), kind))
	}
}

// poolArg is the argument of get's commands that take a pool.
const poolArg = "[NAMESPACE/NAME]"

// getNamed is a get command that lists everything, or one object when args names it.
func (o *options) getNamed(use string, aliases []string, arg, short string, run func(name string) call) *cobra.Command {
	args := cobra.MaximumNArgs(1)
	switch arg {
	case "":
		args = cobra.NoArgs
	case poolArg:
		// A pool's name is checked before anything is read or asked.
		args = cobra.MatchAll(args, func(_ *cobra.Command, args []string) error {
			for _, a := range args {
				if _, err := parsePool(a); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if arg != "" {
		use += " " + arg
	}
	return &cobra.Command{
		Use:     use,
		Aliases: aliases,
		Short:   short,
		Args:    args,
		RunE:    func(cmd *cobra.Command, args []string) error { return o.ask(cmd, roleViewer, run(firstArg(args))) },
	}
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// parsePool reads a pool's NAMESPACE/NAME.
func parsePool(s string) (*pb.PoolRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("pool %q: want NAMESPACE/NAME", s)
	}
	return &pb.PoolRef{Namespace: ns, Name: name}, nil
}

var clusterColumns = []column{{name: "CLUSTER"}, {name: "REGION"}, {name: "ZONE"}, {name: "STATE"}, {name: "EXPORTS"}, {name: "GATEWAY"},
	{name: "HUB"}, {name: "LAST SEEN"}, {name: "VERSION", wide: true}, {name: "REGISTERED", wide: true}, {name: "LABELS", wide: true}}

func (o *options) getClusters(g *getOptions, name string) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		sel, err := g.matcher()
		if err != nil {
			return err
		}
		var resp proto.Message
		var clusters []*pb.Cluster
		if name != "" {
			one, err := c.GetCluster(ctx, &pb.GetClusterRequest{ClusterId: name})
			if err != nil {
				return err
			}
			resp, clusters = one, []*pb.Cluster{one.GetCluster()}
		} else {
			all, err := allClusters(ctx, c)
			if err != nil {
				return err
			}
			all.Clusters = slices.DeleteFunc(all.Clusters, func(cl *pb.Cluster) bool {
				return g.region != "" && cl.GetInfo().GetRegion() != g.region || !sel.Matches(labels.Set(cl.GetInfo().GetLabels()))
			})
			resp, clusters = all, all.GetClusters()
		}
		if done, err := o.structured(w, resp); done {
			return err
		}
		rows := make([][]string, 0, len(clusters))
		for _, cl := range clusters {
			i := cl.GetInfo()
			state := stateName(cl.GetState())
			if cl.GetCordoned() {
				state += ",Cordoned" // as kubectl shows Ready,SchedulingDisabled
			}
			rows = append(rows, []string{i.GetClusterId(), i.GetRegion(), dash(i.GetZone()), state, strconv.Itoa(int(cl.GetExports())),
				dash(i.GetGatewayAddress()), dash(cl.GetHubId()), o.age(cl.GetLastSeen().AsTime(), cl.GetLastSeen() != nil),
				dash(i.GetVersion()), o.age(cl.GetRegisteredAt().AsTime(), cl.GetRegisteredAt() != nil), labelText(i.GetLabels())})
		}
		return o.printTable(w, clusterColumns, rows)
	}
}

// pools lists every pool, or the one named, with the members in g's region.
func (o *options) pools(ctx context.Context, c pb.AdminServiceClient, g *getOptions, name string) (proto.Message, []*pb.Pool, error) {
	sel, err := g.matcher()
	if err != nil {
		return nil, nil, err
	}
	var resp proto.Message
	var pools []*pb.Pool
	if name != "" {
		ref, err := parsePool(name)
		if err != nil {
			return nil, nil, err
		}
		one, err := c.GetPool(ctx, &pb.GetPoolRequest{Pool: ref})
		if err != nil {
			return nil, nil, err
		}
		resp, pools = one, []*pb.Pool{one.GetPool()}
	} else {
		all, err := allPools(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		resp, pools = all, all.GetPools()
	}
	for _, p := range pools {
		p.Members = slices.DeleteFunc(p.Members, func(m *pb.PoolMember) bool {
			return g.region != "" && m.GetRegion() != g.region || !sel.Matches(labels.Set(m.GetLabels()))
		})
	}
	return resp, pools, nil
}

var poolColumns = []column{{name: "POOL"}, {name: "CLUSTER"}, {name: "REGION"}, {name: "STATE"}, {name: "READY"}, {name: "QUEUE"}, {name: "RUNNING"},
	{name: "KV-CACHE"}, {name: "SATURATION"}, {name: "SPILL"}, {name: "LORA"}, {name: "REPORTED"},
	{name: "ADMITTED", wide: true}, {name: "SHED", wide: true}, {name: "SPILLED", wide: true}, {name: "GPU", wide: true}, {name: "LABELS", wide: true}}

func (o *options) getPools(g *getOptions, name string) call {
	return o.poolTable(g, name, poolColumns, func(p *pb.PoolRef, m *pb.PoolMember) [][]string {
		cp := m.GetCapacity().GetCapacity()
		totals := []string{"-", "-", "-", "-"}
		if cp != nil {
			totals = []string{strconv.FormatUint(cp.GetAdmittedTotal(), 10), strconv.FormatUint(cp.GetShedTotal(), 10), strconv.FormatUint(cp.GetSpilledTotal(), 10),
				percent(cp.GpuUtilization)}
		}
		return [][]string{append(append(o.poolRow(p, m), totals...), labelText(m.GetLabels()))}
	})
}

var endpointColumns = []column{{name: "POOL"}, {name: "CLUSTER"}, {name: "REGION"}, {name: "ENDPOINT"}, {name: "READY"}, {name: "QUEUE"},
	{name: "RUNNING"}, {name: "KV-CACHE"}, {name: "GPU"}, {name: "REPORTED", wide: true}}

func (o *options) getEndpoints(g *getOptions, name string) call {
	return o.poolTable(g, name, endpointColumns, func(p *pb.PoolRef, m *pb.PoolMember) [][]string { return o.endpointRows(p, m, true) })
}

// endpointRows are a pool member's endpoints as get endpoints prints them; reported adds the
// report's age (the wide column).
func (o *options) endpointRows(p *pb.PoolRef, m *pb.PoolMember, reported bool) [][]string {
	var rows [][]string
	for _, e := range m.GetCapacity().GetCapacity().GetEndpoints() {
		ready := "no"
		switch {
		case e.GetReady():
			ready = "yes"
		case e.GetScrapeError() != "":
			ready = "no (scrape: " + e.GetScrapeError() + ")"
		}
		row := []string{poolName(p), m.GetClusterId(), m.GetRegion(), e.GetAddress(), ready,
			strconv.Itoa(int(e.GetQueueDepth())), strconv.Itoa(int(e.GetRunningRequests())),
			fmt.Sprintf("%.0f%%", e.GetKvCacheUtilization()*100), percent(e.GpuUtilization)}
		if reported {
			row = append(row, o.capacityAge(m.GetCapacity()))
		}
		rows = append(rows, row)
	}
	return rows
}

// poolTable lists the pools (or the one named) as --output asks: the hub's answer, or a table
// of columns with rowsOf's rows for each member.
func (o *options) poolTable(g *getOptions, name string, columns []column, rowsOf func(*pb.PoolRef, *pb.PoolMember) [][]string) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		resp, pools, err := o.pools(ctx, c, g, name)
		if err != nil {
			return err
		}
		if done, err := o.structured(w, resp); done {
			return err
		}
		var rows [][]string
		for _, p := range pools {
			for _, m := range p.GetMembers() {
				rows = append(rows, rowsOf(p.GetPool(), m)...)
			}
		}
		return o.printTable(w, columns, rows)
	}
}

// percent renders an optional 0..1 value as a percentage, "-" when absent.
func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *v*100)
}

func poolName(p *pb.PoolRef) string { return p.GetNamespace() + "/" + p.GetName() }

const poolsHeader = "POOL\tCLUSTER\tREGION\tSTATE\tREADY\tQUEUE\tRUNNING\tKV-CACHE\tSATURATION\tSPILL\tLORA\tREPORTED"

// poolRow renders one member of a pool as the cells of poolsHeader's columns.
func (o *options) poolRow(pool *pb.PoolRef, m *pb.PoolMember) []string {
	row := []string{poolName(pool), m.GetClusterId(), m.GetRegion(), stateName(m.GetState())}
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
	return row
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

// allClusters, allPools and allImports list every cluster, pool and import, page by page.
func allClusters(ctx context.Context, c pb.AdminServiceClient) (*pb.ListClustersResponse, error) {
	return listAll(ctx, func(ctx context.Context, token string) (*pb.ListClustersResponse, error) {
		return c.ListClusters(ctx, &pb.ListClustersRequest{PageToken: token})
	})
}

func allPools(ctx context.Context, c pb.AdminServiceClient) (*pb.ListPoolsResponse, error) {
	return listAll(ctx, func(ctx context.Context, token string) (*pb.ListPoolsResponse, error) {
		return c.ListPools(ctx, &pb.ListPoolsRequest{PageToken: token})
	})
}

func allImports(ctx context.Context, c pb.AdminServiceClient) (*pb.ListImportsResponse, error) {
	return listAll(ctx, func(ctx context.Context, token string) (*pb.ListImportsResponse, error) {
		return c.ListImports(ctx, &pb.ListImportsRequest{PageToken: token})
	})
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

func (o *options) getImports(name string) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		resp, err := allImports(ctx, c)
		if err != nil {
			return err
		}
		if name != "" {
			ref, err := parsePool(name)
			if err != nil {
				return err
			}
			resp.Imports = slices.DeleteFunc(resp.Imports, func(i *pb.Import) bool { return !proto.Equal(i.GetPool(), ref) })
			if len(resp.Imports) == 0 {
				return status.Errorf(codes.NotFound, "no cluster exports pool %s", name)
			}
		}
		if done, err := o.structured(w, resp); done {
			return err
		}
		rows := make([][]string, 0, len(resp.GetImports()))
		for _, i := range resp.GetImports() {
			rows = append(rows, importsRow(i))
		}
		return o.printTable(w, []column{{name: "POOL"}, {name: "EXPORTING CLUSTERS"}}, rows)
	}
}

// importsRow is a pool's row in get imports: its exporting clusters, sorted.
func importsRow(i *pb.Import) []string {
	cs := slices.Clone(i.GetExportingClusters())
	slices.Sort(cs)
	return []string{poolName(i.GetPool()), strings.Join(cs, ",")}
}

func (o *options) getHubs(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
	resp, err := c.ListHubs(ctx, &pb.ListHubsRequest{})
	if err != nil {
		return err
	}
	if done, err := o.structured(w, resp); done {
		return err
	}
	rows := make([][]string, 0, len(resp.GetHubs()))
	for _, h := range resp.GetHubs() {
		leader := "-"
		if h.GetLeader() {
			leader = "yes"
		}
		rows = append(rows, []string{h.GetHubId(), dash(h.GetAdminAddress()), leader, dash(h.GetIncarnation()),
			o.age(h.GetStartedAt().AsTime(), h.GetStartedAt() != nil)})
	}
	return o.printTable(w, []column{{name: "HUB"}, {name: "ADDRESS"}, {name: "LEADER"}, {name: "INCARNATION"}, {name: "STARTED"}}, rows)
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

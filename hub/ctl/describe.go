package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func (o *options) describeCommand() *cobra.Command {
	describe := &cobra.Command{
		Use:   "describe",
		Short: "One cluster or pool in detail, with its recent events (viewer)",
		Long: "describe shows what the answering hub replica holds of one cluster or pool: its state, each pool\n" +
			"member's load and spill state with the age of its report, the import states, and the recent\n" +
			"events that changed it (registered, connected, disconnected, exported, withdrawn, cordoned,\n" +
			"started or stopped spilling or saturating). Each replica keeps the events it saw since it started.",
	}
	cluster := &cobra.Command{
		Use:     "cluster NAME",
		Aliases: []string{"clusters"},
		Short:   "A cluster: registration, liveness, cordon, its pools' load, its imports, its events",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.ask(cmd, roleViewer, o.describeCluster(args[0]))
		},
	}
	pool := &cobra.Command{
		Use:     "pool NAMESPACE/NAME",
		Aliases: []string{"pools"},
		Short:   "A pool: each member cluster's load and spill state, who imports it, its events",
		Args: cobra.MatchAll(cobra.ExactArgs(1), func(_ *cobra.Command, args []string) error {
			_, err := parsePool(args[0])
			return err
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, _ := parsePool(args[0])
			return o.ask(cmd, roleViewer, o.describePool(ref))
		},
	}
	describe.AddCommand(cluster, pool)
	return describe
}

// describeCluster reads a cluster, the pools it is a member of, its import states and events.
func (o *options) describeCluster(name string) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		cl, err := c.GetCluster(ctx, &pb.GetClusterRequest{ClusterId: name})
		if err != nil {
			return err
		}
		pools, err := allPools(ctx, c)
		if err != nil {
			return err
		}
		imports, err := allImports(ctx, c)
		if err != nil {
			return err
		}
		events, err := c.ListEvents(ctx, &pb.ListEventsRequest{ClusterId: name})
		if err != nil {
			return err
		}
		budgets, err := c.ListBudgets(ctx, &pb.ListBudgetsRequest{})
		if err != nil {
			return err
		}
		for _, b := range budgets.GetBudgets() { // the cluster's own draws on each budget
			b.Members = slices.DeleteFunc(b.Members, func(m *pb.BudgetMember) bool { return m.GetClusterId() != name })
		}
		budgets.Budgets = slices.DeleteFunc(budgets.Budgets, func(b *pb.BudgetStatus) bool { return len(b.GetMembers()) == 0 })
		var members []*pb.Pool // the cluster's membership of each pool it exports
		for _, p := range pools.GetPools() {
			for _, m := range p.GetMembers() {
				if m.GetClusterId() == name {
					members = append(members, &pb.Pool{Pool: p.GetPool(), Members: []*pb.PoolMember{m}})
				}
			}
		}
		var states []*pb.Import // the cluster's own import state of each pool
		for _, i := range imports.GetImports() {
			for _, st := range i.GetImporters() {
				if st.GetClusterId() == name {
					states = append(states, &pb.Import{Pool: i.GetPool(), ExportingClusters: i.GetExportingClusters(), Importers: []*pb.ImportStatus{st}})
				}
			}
		}
		if !o.tabular() {
			return o.writeParts(w, []part{{"cluster", cl.GetCluster()}, {"pools", &pb.ListPoolsResponse{Pools: members}},
				{"imports", &pb.ListImportsResponse{Imports: states}}, {"budgets", budgets}, {"events", events}})
		}

		info := cl.GetCluster().GetInfo()
		state := stateName(cl.GetCluster().GetState())
		if h := cl.GetCluster().GetHubId(); h != "" {
			state += " (session on hub " + h + ")"
		}
		cordoned := "no"
		if cl.GetCluster().GetCordoned() {
			cordoned = "yes: no spoke spills to it (hubctl uncordon)"
		}
		d := &describer{w: w}
		d.field("Name", info.GetClusterId())
		d.field("Region", info.GetRegion())
		d.field("Zone", dash(info.GetZone()))
		d.field("State", state)
		d.field("Cordoned", cordoned)
		if g := cl.GetGossip(); g != "" {
			d.field("Gossip", g+" (by the gossip member of the answering hub replica)")
		}
		d.field("Gateway", dash(info.GetGatewayAddress()))
		d.field("Version", dash(info.GetVersion()))
		d.field("Registered", o.age(cl.GetCluster().GetRegisteredAt().AsTime(), cl.GetCluster().GetRegisteredAt() != nil))
		d.field("Last seen", o.age(cl.GetCluster().GetLastSeen().AsTime(), cl.GetCluster().GetLastSeen() != nil))
		d.field("Exports", fmt.Sprint(cl.GetCluster().GetExports()))

		var rows [][]string
		for _, p := range members {
			rows = append(rows, o.poolRow(p.GetPool(), p.GetMembers()[0]))
		}
		d.table(o, "Pools", "(exports none)", poolColumns[:12], rows)
		rows = rows[:0]
		for _, p := range members {
			rows = append(rows, scrapeFailureRows(poolName(p.GetPool()), p.GetMembers()[0])...)
		}
		d.table(o, "Scrape failures", "(none: every endpoint's last scrape succeeded)", []column{{name: "POOL"}, {name: "KIND"}, {name: "ENDPOINTS"}}, rows)
		rows = rows[:0]
		for _, i := range states {
			st := i.GetImporters()[0]
			rows = append(rows, importRow(i.GetPool(), st))
		}
		d.table(o, "Imports", "(reports no import)", importColumns, rows)
		rows = rows[:0]
		for _, b := range budgets.GetBudgets() {
			rows = append(rows, budgetMemberRows(b)...)
		}
		d.table(o, "Budgets", "(draws on no token budget)", describeBudgetColumns, rows)
		d.events(o, events.GetEvents(), false)
		return d.err
	}
}

// describePool reads a pool's members, its importers and its events.
func (o *options) describePool(ref *pb.PoolRef) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		p, err := c.GetPool(ctx, &pb.GetPoolRequest{Pool: ref})
		if err != nil {
			return err
		}
		imports, err := allImports(ctx, c)
		if err != nil {
			return err
		}
		events, err := c.ListEvents(ctx, &pb.ListEventsRequest{Pool: ref})
		if err != nil {
			return err
		}
		var imp *pb.Import
		for _, i := range imports.GetImports() {
			if proto.Equal(i.GetPool(), ref) {
				imp = i
			}
		}
		if !o.tabular() {
			return o.writeParts(w, []part{{"pool", p.GetPool()}, {"import", imp}, {"events", events}})
		}
		d := &describer{w: w}
		d.field("Name", poolName(ref))
		d.field("Exported by", dash(strings.Join(imp.GetExportingClusters(), ", ")))
		spilling := 0
		var rows [][]string
		for _, m := range p.GetPool().GetMembers() {
			if m.GetCapacity().GetCapacity().GetSpilling() {
				spilling++
			}
			rows = append(rows, o.poolRow(ref, m)[1:])
		}
		d.field("Spilling", fmt.Sprintf("%d of %d member clusters", spilling, len(rows)))
		d.table(o, "Members", "(none)", poolColumns[1:12], rows)
		rows = rows[:0]
		for _, m := range p.GetPool().GetMembers() {
			rows = append(rows, scrapeFailureRows(m.GetClusterId(), m)...)
		}
		d.table(o, "Scrape failures", "(none: every endpoint's last scrape succeeded)", []column{{name: "CLUSTER"}, {name: "KIND"}, {name: "ENDPOINTS"}}, rows)
		rows = rows[:0]
		for _, st := range imp.GetImporters() {
			rows = append(rows, append([]string{st.GetClusterId()}, importRow(ref, st)[1:]...))
		}
		d.table(o, "Importers", "(none reported)", append([]column{{name: "CLUSTER"}}, importColumns[1:]...), rows)
		d.events(o, events.GetEvents(), true)
		return d.err
	}
}

// scrapeFailureRows are a member's endpoints whose last scrape failed, one row per kind of
// failure, first column first.
func scrapeFailureRows(first string, m *pb.PoolMember) [][]string {
	failures := m.GetCapacity().GetCapacity().GetScrapeFailures()
	var rows [][]string
	for _, kind := range slices.Sorted(maps.Keys(failures)) {
		rows = append(rows, []string{first, kind, strconv.FormatUint(uint64(failures[kind]), 10)})
	}
	return rows
}

var importColumns = []column{{name: "POOL"}, {name: "IMPORTED"}, {name: "REASON"}, {name: "MESSAGE"}}

func importRow(pool *pb.PoolRef, st *pb.ImportStatus) []string {
	imported := "no"
	if st.GetImported() {
		imported = "yes"
	}
	return []string{poolName(pool), imported, dash(st.GetReason()), dash(st.GetMessage())}
}

// describer writes kubectl describe's layout: aligned fields, then indented tables; it keeps the
// first write error.
type describer struct {
	w   io.Writer
	err error
}

func (d *describer) printf(format string, args ...any) {
	if d.err == nil {
		_, d.err = fmt.Fprintf(d.w, format, args...)
	}
}

func (d *describer) field(name, value string) { d.printf("%-12s %s\n", name+":", value) }

// table writes a titled table indented by two spaces, or the title and none when it has no row.
func (d *describer) table(o *options, title, none string, columns []column, rows [][]string) {
	if len(rows) == 0 {
		d.printf("%s:\n  %s\n", title, none)
		return
	}
	var buf bytes.Buffer
	// Tables in describe always have their header and only their default columns.
	t := *o
	t.noHeaders, t.output = false, outputTable
	if err := t.printTable(&buf, columns, rows); err != nil && d.err == nil {
		d.err = err
	}
	d.printf("%s:\n", title)
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		d.printf("  %s\n", line)
	}
}

// events writes the events, oldest first; byCluster adds their cluster's column.
func (d *describer) events(o *options, evs []*pb.FleetEvent, byCluster bool) {
	columns := []column{{name: "AGE"}, {name: "REASON"}, {name: "POOL"}, {name: "MESSAGE"}}
	if byCluster {
		columns = []column{{name: "AGE"}, {name: "CLUSTER"}, {name: "REASON"}, {name: "MESSAGE"}}
	}
	var rows [][]string
	for _, e := range evs {
		age := o.age(e.GetTime().AsTime(), e.GetTime() != nil)
		if byCluster {
			rows = append(rows, []string{age, dash(e.GetClusterId()), e.GetReason(), e.GetMessage()})
			continue
		}
		pool := "-"
		if e.GetPool() != nil {
			pool = poolName(e.GetPool())
		}
		rows = append(rows, []string{age, e.GetReason(), pool, e.GetMessage()})
	}
	d.table(o, "Events", "(none since this hub replica started)", columns, rows)
}

// part is one named message of describe's JSON or YAML.
type part struct {
	name string
	msg  proto.Message
}

// writeParts writes the parts as one JSON object (each in protobuf's JSON mapping), as --output
// asks.
func (o *options) writeParts(w io.Writer, parts []part) error {
	obj := map[string]json.RawMessage{}
	for _, p := range parts {
		raw := json.RawMessage("null")
		if p.msg != nil && p.msg.ProtoReflect().IsValid() {
			b, err := protojson.Marshal(p.msg)
			if err != nil {
				return err
			}
			raw = b
		}
		obj[p.name] = raw
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var js bytes.Buffer
	if err := json.Indent(&js, b, "", "  "); err != nil {
		return err
	}
	return o.writeStructured(w, js.Bytes())
}

package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/proto"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// watchKind is what `get -w` follows: its rows and their header.
type watchKind string

const (
	watchPools     watchKind = "pools"
	watchClusters  watchKind = "clusters"
	watchEndpoints watchKind = "endpoints"
	watchImports   watchKind = "imports"
)

// The headers of `get -w`: the clusters' liveness, the pools' members, the members' endpoints
// and the pools' exporting clusters, as the hub's view updates carry them.
var watchHeaders = map[watchKind]string{
	watchPools:     poolsHeader,
	watchClusters:  "CLUSTER\tREGION\tZONE\tSTATE\tGATEWAY\tLAST SEEN",
	watchEndpoints: "POOL\tCLUSTER\tREGION\tENDPOINT\tREADY\tQUEUE\tRUNNING\tKV-CACHE\tGPU",
	watchImports:   "POOL\tEXPORTING CLUSTERS",
}

// watch is `get clusters|pools|endpoints|imports -w`: the hub's Watch stream printed as rows of
// kind, every one at the first snapshot, then those that changed as each update arrives (kubectl
// get -w); with -o json or yaml, each update as it came. It writes to out as it goes, not to the
// call's buffer, and runs until interrupted or the stream ends.
func (o *options) watch(out io.Writer, kind watchKind) call {
	return func(ctx context.Context, c pb.AdminServiceClient, _ io.Writer) error {
		stream, err := c.Watch(ctx, &pb.WatchRequest{WithoutImportStates: true})
		if err != nil {
			return err
		}
		st := newWatchState()
		var parts *pb.ViewUpdate
		header, printed := false, false
		for {
			resp, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if printed {
					return &printedError{err}
				}
				return err
			}
			u := resp.GetUpdate()
			if parts != nil {
				proto.Merge(parts, u)
				u = parts
			}
			if resp.GetUpdate().GetMore() {
				parts = u
				continue
			}
			parts, u.More = nil, false
			printed = true
			if o.output == "yaml" {
				fmt.Fprintln(out, "---") // one YAML document per update
			}
			if done, err := o.structured(out, u); done {
				if err != nil {
					return err
				}
				continue
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			if !header && !o.noHeaders {
				fmt.Fprintln(tw, watchHeaders[kind])
				header = true
			}
			rows, changed, imports := st.apply(u)
			switch kind {
			case watchClusters:
				for _, cl := range changed {
					state := stateName(cl.GetState())
					if cl.GetCordoned() {
						state += ",Cordoned"
					}
					fmt.Fprintln(tw, strings.Join([]string{cl.GetClusterId(), cl.GetRegion(), dash(cl.GetZone()), state,
						dash(cl.GetGatewayAddress()), o.age(cl.GetLastSeen().AsTime(), cl.GetLastSeen() != nil)}, "\t"))
				}
			case watchPools:
				for _, r := range rows {
					fmt.Fprintln(tw, strings.Join(o.poolRow(r.pool, r.member), "\t"))
				}
			case watchEndpoints:
				for _, r := range rows {
					for _, row := range o.endpointRows(r.pool, r.member, false) {
						fmt.Fprintln(tw, strings.Join(row, "\t"))
					}
				}
			case watchImports:
				for _, imp := range imports {
					fmt.Fprintln(tw, strings.Join(importsRow(imp), "\t"))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
}

// watchState is the fleet as the watch has told it so far.
type watchState struct {
	imports  map[string]*pb.Import
	clusters map[string]*pb.ClusterLiveness
	capacity map[rowKey]*pb.RemoteCapacity
}

type rowKey struct{ pool, cluster string }

type poolRow struct {
	pool   *pb.PoolRef
	member *pb.PoolMember
}

func newWatchState() *watchState {
	return &watchState{imports: map[string]*pb.Import{}, clusters: map[string]*pb.ClusterLiveness{}, capacity: map[rowKey]*pb.RemoteCapacity{}}
}

// apply applies an update and returns the pool members it changed, sorted by pool and cluster,
// the clusters whose liveness it changed, and the imports it changed, sorted: every one for a
// snapshot. An update the hub marked incomplete removes nothing (a snapshot so marked replaces
// nothing), as at a spoke.
func (st *watchState) apply(u *pb.ViewUpdate) ([]poolRow, []*pb.ClusterLiveness, []*pb.Import) {
	if u.GetSnapshot() && !u.GetIncomplete() {
		*st = *newWatchState()
	}
	touched := map[rowKey]bool{}
	for _, imp := range u.GetImports() {
		k := poolKey(imp.GetPool())
		st.imports[k] = imp
		for _, id := range imp.GetExportingClusters() {
			touched[rowKey{k, id}] = true
		}
	}
	for _, p := range u.GetImportsRemoved() {
		if !u.GetIncomplete() {
			delete(st.imports, poolKey(p))
		}
	}
	changed, imports := slices.Clone(u.GetClusters()), slices.Clone(u.GetImports())
	if u.GetSnapshot() {
		changed, imports = nil, nil // every one, below
	}
	for _, cl := range u.GetClusters() {
		st.clusters[cl.GetClusterId()] = cl
		for k, imp := range st.imports {
			if slices.Contains(imp.GetExportingClusters(), cl.GetClusterId()) {
				touched[rowKey{k, cl.GetClusterId()}] = true
			}
		}
	}
	for _, id := range u.GetClustersRemoved() {
		if !u.GetIncomplete() {
			delete(st.clusters, id)
		}
	}
	for _, rc := range u.GetCapacity() {
		k := rowKey{poolKey(rc.GetCapacity().GetPool()), rc.GetClusterId()}
		st.capacity[k] = rc
		touched[k] = true
	}
	for _, ck := range u.GetCapacityRemoved() {
		if u.GetIncomplete() {
			continue
		}
		k := rowKey{poolKey(ck.GetPool()), ck.GetClusterId()}
		delete(st.capacity, k)
		touched[k] = true
	}
	if u.GetSnapshot() {
		for _, cl := range st.clusters {
			changed = append(changed, cl)
		}
		for _, imp := range st.imports {
			imports = append(imports, imp)
		}
		for k, imp := range st.imports {
			for _, id := range imp.GetExportingClusters() {
				touched[rowKey{k, id}] = true
			}
		}
	}
	keys := make([]rowKey, 0, len(touched))
	for k := range touched {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rowKey) int {
		if c := strings.Compare(a.pool, b.pool); c != 0 {
			return c
		}
		return strings.Compare(a.cluster, b.cluster)
	})
	var rows []poolRow
	for _, k := range keys {
		imp, ok := st.imports[k.pool]
		if !ok || !slices.Contains(imp.GetExportingClusters(), k.cluster) {
			continue // no longer a member
		}
		m := &pb.PoolMember{ClusterId: k.cluster, Capacity: st.capacity[k]}
		if cl := st.clusters[k.cluster]; cl != nil {
			m.Region, m.State = cl.GetRegion(), cl.GetState()
		}
		rows = append(rows, poolRow{pool: imp.GetPool(), member: m})
	}
	slices.SortFunc(changed, func(a, b *pb.ClusterLiveness) int { return strings.Compare(a.GetClusterId(), b.GetClusterId()) })
	slices.SortFunc(imports, func(a, b *pb.Import) int { return strings.Compare(poolKey(a.GetPool()), poolKey(b.GetPool())) })
	return rows, changed, imports
}

func poolKey(p *pb.PoolRef) string { return p.GetNamespace() + "/" + p.GetName() }

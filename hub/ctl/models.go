package ctl

import (
	"context"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// servedModel is one model as get models prints it: the pool members that serve it.
type servedModel struct {
	Model string `json:"model"`
	// Adapter is true for a LoRA adapter loaded on some endpoint of the pools (not a base model).
	Adapter  bool        `json:"adapter,omitempty"`
	ServedBy []modelHost `json:"servedBy"`
}

// modelHost is one pool member serving a model.
type modelHost struct {
	Cluster        string `json:"cluster"`
	Region         string `json:"region"`
	Pool           string `json:"pool"`
	ReadyEndpoints uint32 `json:"readyEndpoints"`
}

var modelColumns = []column{{name: "MODEL"}, {name: "KIND"}, {name: "CLUSTERS"}, {name: "REGIONS"}, {name: "POOLS"},
	{name: "READY", wide: true}}

// getModels lists each model (or the one named) with the clusters, regions and pools that
// serve it, from the pools' capacity reports: the models their servers serve, and the LoRA
// adapters loaded on them. --region and -l select the pool members as for get pools.
func (o *options) getModels(g *getOptions, name string) call {
	return func(ctx context.Context, c pb.AdminServiceClient, w io.Writer) error {
		_, pools, err := o.pools(ctx, c, g, "")
		if err != nil {
			return err
		}
		models := servedModels(pools)
		if name != "" {
			models = slices.DeleteFunc(models, func(m servedModel) bool { return m.Model != name })
			if len(models) == 0 {
				return status.Errorf(codes.NotFound, "model %q: no pool member reports serving it", name)
			}
		}
		if !o.tabular() {
			return o.writeJSON(w, struct {
				Models []servedModel `json:"models"`
			}{models})
		}
		var rows [][]string
		for _, m := range models {
			kind := "base"
			if m.Adapter {
				kind = "adapter"
			}
			var clusters, regions, pools []string
			var ready uint32
			for _, h := range m.ServedBy {
				clusters, regions, pools = append(clusters, h.Cluster), append(regions, h.Region), append(pools, h.Pool)
				ready += h.ReadyEndpoints
			}
			rows = append(rows, []string{m.Model, kind, joinSet(clusters), joinSet(regions), joinSet(pools), strconv.FormatUint(uint64(ready), 10)})
		}
		return o.printTable(w, modelColumns, rows)
	}
}

// servedModels gathers the models of the pools' members, by name.
func servedModels(pools []*pb.Pool) []servedModel {
	byName := map[string]*servedModel{}
	add := func(model string, adapter bool, h modelHost) {
		m := byName[model]
		if m == nil {
			m = &servedModel{Model: model, Adapter: adapter}
			byName[model] = m
		}
		m.Adapter = m.Adapter && adapter // a base model anywhere is a base model
		m.ServedBy = append(m.ServedBy, h)
	}
	for _, p := range pools {
		for _, mem := range p.GetMembers() {
			cp := mem.GetCapacity().GetCapacity()
			h := modelHost{Cluster: mem.GetClusterId(), Region: mem.GetRegion(), Pool: poolName(p.GetPool()), ReadyEndpoints: cp.GetReadyEndpoints()}
			for _, model := range cp.GetModels() {
				add(model, false, h)
			}
			for _, a := range cp.GetLoraAdapters() {
				if !slices.Contains(cp.GetModels(), a) {
					add(a, true, h)
				}
			}
		}
	}
	out := make([]servedModel, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		m := *byName[name]
		slices.SortFunc(m.ServedBy, func(a, b modelHost) int {
			return strings.Compare(a.Cluster+"\x00"+a.Pool, b.Cluster+"\x00"+b.Pool)
		})
		out = append(out, m)
	}
	return out
}

// joinSet joins the distinct values in order of first appearance.
func joinSet(vs []string) string {
	var out []string
	for _, v := range vs {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return strings.Join(out, ",")
}

package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// errNotReady is status's answer when some cluster is not connected or not fresh.
var errNotReady = errors.New("the fleet is not ready")

// clusterStatus is one cluster's line in status.
type clusterStatus struct {
	cluster *pb.Cluster
	pools   int           // pools it exports and reported
	oldest  time.Duration // age of its oldest capacity report; 0 without one
	ready   bool
	why     string
}

func (o *options) statusCommand() *cobra.Command {
	var (
		wait   bool
		within time.Duration
		fresh  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Whether every registered cluster is connected and its capacity fresh (viewer)",
		Long: "status lists each registered cluster: connected (its spoke holds a session) and fresh (the hub's\n" +
			"capacity reports of its pools are younger than --fresh). It exits 0 when every cluster is both, 1\n" +
			"otherwise; with --wait it asks again every second until they are, for at most --wait-timeout.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fresh <= 0 || within <= 0 {
				return fmt.Errorf("--fresh %s and --wait-timeout %s: want positive durations", fresh, within)
			}
			ctx := cmd.Context()
			if wait {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, within)
				defer cancel()
				cmd.SetContext(ctx)
			}
			var last []clusterStatus // the last answer
			for {
				err := o.ask(cmd, roleViewer, func(ctx context.Context, c pb.AdminServiceClient, _ io.Writer) error {
					sts, err := fleetStatus(ctx, c, fresh)
					if err == nil {
						last = sts
					}
					return err
				})
				if ctx.Err() != nil && last != nil {
					err = nil // --wait ran out while asking: the last answer stands
				}
				ready := err == nil && allReady(last)
				// Without --wait, or once ready or out of time, the last answer is the one: a
				// hub that cannot be asked is asked again while --wait lasts.
				if ready || !wait || ctx.Err() != nil {
					if err != nil {
						return err
					}
					if err := o.printStatus(cmd.OutOrStdout(), last); err != nil {
						return err
					}
					switch {
					case ready:
						return nil
					case wait:
						return fmt.Errorf("%w after %s: %s", errNotReady, within, summary(last))
					}
					return fmt.Errorf("%w: %s", errNotReady, summary(last))
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "ask again every second until every cluster is connected and fresh")
	cmd.Flags().DurationVar(&within, "wait-timeout", 5*time.Minute, "how long --wait waits")
	cmd.Flags().DurationVar(&fresh, "fresh", 10*time.Second, "the age past which a capacity report is stale")
	return cmd
}

// fleetStatus reads every cluster and pool and says, for each cluster, whether it is connected
// and its capacity fresh.
func fleetStatus(ctx context.Context, c pb.AdminServiceClient, fresh time.Duration) ([]clusterStatus, error) {
	clusters, err := allClusters(ctx, c)
	if err != nil {
		return nil, err
	}
	pools, err := allPools(ctx, c)
	if err != nil {
		return nil, err
	}
	type reports struct {
		n, missing int
		oldest     time.Duration
	}
	by := map[string]*reports{}
	for _, p := range pools.GetPools() {
		for _, m := range p.GetMembers() {
			r := by[m.GetClusterId()]
			if r == nil {
				r = &reports{}
				by[m.GetClusterId()] = r
			}
			if m.GetCapacity() == nil {
				r.missing++
				continue
			}
			r.n++
			r.oldest = max(r.oldest, m.GetCapacity().GetAge().AsDuration())
		}
	}
	out := make([]clusterStatus, 0, len(clusters.GetClusters()))
	for _, cl := range clusters.GetClusters() {
		st := clusterStatus{cluster: cl, ready: true}
		if r := by[cl.GetInfo().GetClusterId()]; r != nil {
			st.pools, st.oldest = r.n, r.oldest
			switch {
			case r.missing > 0:
				st.ready, st.why = false, fmt.Sprintf("%d exported pool(s) without a capacity report", r.missing)
			case r.oldest > fresh:
				st.ready, st.why = false, fmt.Sprintf("capacity %s old, more than --fresh %s", roughly(r.oldest), fresh)
			}
		}
		if cl.GetState() != pb.ClusterState_CLUSTER_STATE_ALIVE {
			st.ready, st.why = false, "no session with the hub"
		}
		out = append(out, st)
	}
	return out, nil
}

func allReady(sts []clusterStatus) bool {
	for _, s := range sts {
		if !s.ready {
			return false
		}
	}
	return true
}

// summary says how many clusters are ready, and names the first that is not.
func summary(sts []clusterStatus) string {
	n := 0
	first := ""
	for _, s := range sts {
		if s.ready {
			n++
		} else if first == "" {
			first = fmt.Sprintf("; %s: %s", s.cluster.GetInfo().GetClusterId(), s.why)
		}
	}
	return fmt.Sprintf("%d of %d clusters connected and fresh%s", n, len(sts), first)
}

func (o *options) printStatus(w io.Writer, sts []clusterStatus) error {
	if !o.tabular() {
		type line struct {
			Cluster  string `json:"cluster"`
			Region   string `json:"region"`
			State    string `json:"state"`
			Pools    int    `json:"pools"`
			OldestMs int64  `json:"oldestCapacityMs"`
			Ready    bool   `json:"ready"`
			Reason   string `json:"reason,omitempty"`
		}
		var doc struct {
			Ready    bool   `json:"ready"`
			Clusters []line `json:"clusters"`
		}
		doc.Ready, doc.Clusters = allReady(sts), []line{}
		for _, s := range sts {
			doc.Clusters = append(doc.Clusters, line{Cluster: s.cluster.GetInfo().GetClusterId(), Region: s.cluster.GetInfo().GetRegion(),
				State: stateName(s.cluster.GetState()), Pools: s.pools, OldestMs: s.oldest.Milliseconds(), Ready: s.ready, Reason: s.why})
		}
		return o.writeJSON(w, doc)
	}
	rows := make([][]string, 0, len(sts))
	for _, s := range sts {
		ready, age := "yes", "-"
		if !s.ready {
			ready = "no: " + s.why
		}
		if s.pools > 0 {
			age = roughly(s.oldest)
		}
		rows = append(rows, []string{s.cluster.GetInfo().GetClusterId(), s.cluster.GetInfo().GetRegion(), stateName(s.cluster.GetState()),
			fmt.Sprint(s.pools), age, ready})
	}
	if err := o.printTable(w, []column{{name: "CLUSTER"}, {name: "REGION"}, {name: "STATE"}, {name: "POOLS"}, {name: "CAPACITY AGE"}, {name: "READY"}}, rows); err != nil {
		return err
	}
	if o.noHeaders {
		return nil
	}
	_, err := fmt.Fprintln(w, summary(sts))
	return err
}

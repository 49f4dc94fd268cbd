package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// DefaultBudgetReportInterval is how often spokes report their budgets' usage when the hub's
// options name no interval.
const DefaultBudgetReportInterval = time.Second

// budgetStream is one sync stream's part in the fleet's token budgets (docs/budgets.md): the
// spoke process it speaks for (its member key), and the answers to its reports, the latest
// replacing one not yet sent.
type budgetStream struct {
	member, cluster string
	answers         chan *pb.Budgets
}

func (s *Server) newBudgetStream(hello *pb.Hello) *budgetStream {
	if s.opts.Budgets == nil {
		return nil
	}
	return &budgetStream{member: hello.GetClusterId() + "/" + hello.GetSpokeIncarnation(), cluster: hello.GetClusterId(),
		answers: make(chan *pb.Budgets, 1)}
}

// budgetReportInterval is the interval the hub announces.
func (s *Server) budgetReportInterval() time.Duration {
	if s.opts.BudgetReportInterval > 0 {
		return s.opts.BudgetReportInterval
	}
	return DefaultBudgetReportInterval
}

// budgetReport takes a spoke's report: the allocator records it and answers with the spoke's
// grants, which wait for the stream's send loop (a newer answer replaces one not yet sent).
func (s *Server) budgetReport(b *budgetStream, m *pb.BudgetReport) error {
	if b == nil {
		return fmt.Errorf("%w: a budget report, but the hub declares no budgets", ErrInvalidArgument)
	}
	us, err := fleetpb.BudgetUsagesFrom(m.GetBudgets())
	if err != nil {
		return fmt.Errorf("%w: budget report: %w", ErrInvalidArgument, err)
	}
	gs := s.opts.Budgets.Report(b.member, b.cluster, us)
	s.relay.publish(&pb.PeerBudgetReport{ClusterId: b.cluster, Member: b.member, Usage: m.GetBudgets(), Grants: fleetpb.BudgetGrants(gs)})
	answer := &pb.Budgets{Grants: fleetpb.BudgetGrants(gs)}
	select {
	case <-b.answers:
	default:
	}
	b.answers <- answer
	return nil
}

// firstBudgets is a stream's first word on budgets: the declarations and its grants.
func (s *Server) firstBudgets(b *budgetStream) (*pb.Budgets, <-chan struct{}) {
	set, changed := s.opts.Budgets.Budgets()
	gs := s.opts.Budgets.Report(b.member, b.cluster, nil)
	s.relay.publish(&pb.PeerBudgetReport{ClusterId: b.cluster, Member: b.member, Grants: fleetpb.BudgetGrants(gs)})
	return &pb.Budgets{Definitions: fleetpb.BudgetSet(set), Grants: fleetpb.BudgetGrants(gs)}, changed
}

// budgetLimiter holds a stream to one budget report per half the announced interval, after a
// burst of a few.
func (s *Server) budgetLimiter() *rate.Limiter {
	return messageLimiter(s.budgetReportInterval()/2, reportBurst)
}

// ListBudgets lists the fleet's budgets with each spoke process's usage and grant, as this
// replica knows them. A hub that declares no budgets lists none.
func (s *Server) ListBudgets(context.Context, *pb.ListBudgetsRequest) (*pb.ListBudgetsResponse, error) {
	out := &pb.ListBudgetsResponse{}
	if s.opts.Budgets == nil {
		return out, nil
	}
	for _, st := range s.opts.Budgets.Statuses() {
		bs := &pb.BudgetStatus{Spec: fleetpb.BudgetSpec(st.Spec), WindowStartMs: st.Window, UsedTokens: st.UsedTokens, UsedRequests: st.UsedRequests}
		for _, m := range st.Members {
			bs.Members = append(bs.Members, &pb.BudgetMember{ClusterId: m.Cluster, Member: m.Member, Usage: fleetpb.BudgetUsage(m.Usage),
				Granted: fleetpb.BudgetGrant(m.Granted), LastReport: timestamppb.New(m.Seen)})
		}
		out.Budgets = append(out.Budgets, bs)
	}
	return out, nil
}

// budgetCollector exports each declared budget's fleet-wide state as this replica knows it.
type budgetCollector struct{ a *budget.Allocator }

var (
	hubBudgetUsedDesc = prometheus.NewDesc("spillway_hub_budget_window_used_tokens",
		"Tokens the spokes reported charged to the budget in the current window, added up.", []string{"budget"}, nil)
	hubBudgetLimitDesc = prometheus.NewDesc("spillway_hub_budget_limit_tokens",
		"The budget's token limit per window.", []string{"budget"}, nil)
	hubBudgetMembersDesc = prometheus.NewDesc("spillway_hub_budget_members",
		"Spoke processes the budget is divided among.", []string{"budget"}, nil)
)

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hubBudgetUsedDesc
	ch <- hubBudgetLimitDesc
	ch <- hubBudgetMembersDesc
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.a.Statuses() {
		ch <- prometheus.MustNewConstMetric(hubBudgetUsedDesc, prometheus.GaugeValue, float64(st.UsedTokens), st.Spec.Name)
		ch <- prometheus.MustNewConstMetric(hubBudgetLimitDesc, prometheus.GaugeValue, float64(st.Spec.Tokens), st.Spec.Name)
		ch <- prometheus.MustNewConstMetric(hubBudgetMembersDesc, prometheus.GaugeValue, float64(len(st.Members)), st.Spec.Name)
	}
}

// budgetRelay holds the latest budget report of each spoke process of this replica, with the
// grants that answered it, for the other replicas (PeerService.Reports): every replica then
// divides each budget knowing every spoke's ceiling, whichever replica the spoke talks to.
type budgetRelay struct {
	mu      sync.Mutex
	seq     uint64
	latest  map[string]relayed
	changed chan struct{}
}

type relayed struct {
	seq    uint64
	report *pb.PeerBudgetReport
}

func newBudgetRelay() *budgetRelay {
	return &budgetRelay{latest: map[string]relayed{}, changed: make(chan struct{})}
}

// publish replaces a member's report and wakes the streams to the other replicas.
func (r *budgetRelay) publish(rep *pb.PeerBudgetReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.latest[rep.GetMember()] = relayed{seq: r.seq, report: rep}
	close(r.changed)
	r.changed = make(chan struct{})
}

// forget drops a member whose session on this replica ended: the other replicas keep its last
// report for the allocator's MemberTTL, and a replica whose stream starts later does not get it.
func (r *budgetRelay) forget(member string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.latest, member)
}

// since returns the reports published after seq, the sequence number they bring the caller to,
// and a channel closed at the next publish.
func (r *budgetRelay) since(seq uint64) ([]*pb.PeerBudgetReport, uint64, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pb.PeerBudgetReport
	for _, l := range r.latest {
		if l.seq > seq {
			out = append(out, l.report)
		}
	}
	return out, r.seq, r.changed
}

// peerBudgets gives the allocator the budget reports another replica relayed.
func (s *Server) peerBudgets(reps []*pb.PeerBudgetReport) error {
	if s.opts.Budgets == nil {
		return nil
	}
	for _, rep := range reps {
		us, err := fleetpb.BudgetUsagesFrom(rep.GetUsage())
		if err != nil {
			return fmt.Errorf("%w: budget report of %s: %w", ErrInvalidArgument, rep.GetMember(), err)
		}
		s.opts.Budgets.Peer(rep.GetMember(), rep.GetClusterId(), us, fleetpb.BudgetGrantsFrom(rep.GetGrants()))
	}
	return nil
}

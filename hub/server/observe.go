package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// observe runs an observer session (Hello.observer): the fleet view, the hop keys and the
// budgets go to the spoke; its budget reports come from it (its EPP enforces budgets too). It
// opens no session in the registry, renews no lease and takes over nothing: the cluster's real
// session, wherever it runs, goes on. Any other message after the Hello but the Interest parts it
// announced (interest_follows) ends the stream with FailedPrecondition. Like a session, it ends when its certificate
// expires or the cluster is revoked.
func (s *Server) observe(stream pb.SyncService_SyncServer, who caller, hello *pb.Hello, log *slog.Logger) error {
	cluster := hello.GetClusterId()
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	expiry := time.AfterFunc(time.Until(who.cert.NotAfter), func() { cancel(certificateExpired(who.id, who.cert.NotAfter)) })
	defer expiry.Stop()
	obs := &session{cancel: cancel, notBefore: who.cert.NotBefore}
	s.addObserver(cluster, obs)
	defer s.removeObserver(cluster, obs)
	if err := s.checkRevoked(cluster, who.cert); err != nil {
		return err
	}
	// Its first view update is a snapshot, as a session's: it waits for a slot alike.
	opened, err := s.admit(ctx)
	if err != nil {
		return err
	}
	defer opened()
	s.metrics.observers.Inc()
	defer s.metrics.observers.Dec()

	cursor := hello.GetViewCursor()
	resumed := cursor.GetHubIncarnation() == s.model.Incarnation()
	welcome := &pb.Welcome{
		HubId:             s.opts.HubID,
		LeaseTtl:          durationpb.New(s.store.LeaseTTL()),
		MinReportInterval: durationpb.New(s.opts.MinReportInterval),
		CapacityHeartbeat: durationpb.New(s.opts.CapacityHeartbeat),
		ViewResumed:       resumed,
		ClusterId:         cluster,
	}
	bs := s.newBudgetStream(hello)
	if bs != nil {
		welcome.BudgetReportInterval = durationpb.New(s.budgetReportInterval())
		defer s.relay.forget(bs.member)
	}
	fleetpb.SetExportPolicy(welcome, s.opts.Limits.ExportPolicy())
	if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Welcome{Welcome: welcome}}); err != nil {
		return err
	}
	log.Info("observer session started", "resumedView", resumed)
	// The receive side: the rest of the interest when the Hello said it follows, then the
	// stream's end, or a message an observer may not send. It returns once the stream ends (when
	// this handler returns at the latest).
	interest := make(chan []fleet.PoolRef, 1)
	go func() {
		cancel(s.observerRecv(stream, hello, cluster, interest, bs))
	}()
	err = s.sendLoop(ctx, stream, hello, nil, interest, nil, opened, bs)
	cause := context.Cause(ctx)
	log.Info("observer session ended", "cause", cause)
	if errors.Is(cause, io.EOF) {
		return nil
	}
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// observerRecv reads an observer stream: the Interest parts that follow its Hello (when it said
// so), then nothing but the stream's end.
func (s *Server) observerRecv(stream pb.SyncService_SyncServer, hello *pb.Hello, cluster string, interest chan<- []fleet.PoolRef, bs *budgetStream) error {
	parts := newAssembler(0)
	budgetReports := s.budgetLimiter()
	following := hello.GetInterestFollows()
	if following {
		if _, _, err := parts.interestPart(poolsFrom(hello.GetCapacityInterest()), true); err != nil {
			return err
		}
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		// Every spoke replica's EPP enforces budgets: its usage is its own.
		if b := req.GetBudgets(); b != nil {
			s.metrics.received.WithLabelValues("budgets").Inc()
			if !budgetReports.Allow() {
				return &rateError{limit: limitReportRate, msg: fmt.Sprintf("cluster %s sends budget reports faster than one per half the budget_report_interval the hub announced", cluster)}
			}
			if err := s.budgetReport(bs, b); err != nil {
				return err
			}
			continue
		}
		in := req.GetInterest()
		if !following || in == nil {
			return fmt.Errorf("%w: cluster %s sent a message on an observer stream", ErrObserver, cluster)
		}
		if err := validateInterest("interest.capacity_interest", in.GetCapacityInterest()); err != nil {
			return err
		}
		pools, done, err := parts.interestPart(poolsFrom(in.GetCapacityInterest()), in.GetMore())
		if err != nil {
			return err
		}
		if done {
			following = false
			interest <- pools
		}
	}
}

func (s *Server) addObserver(cluster string, obs *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.observers[cluster] == nil {
		s.observers[cluster] = map[*session]struct{}{}
	}
	s.observers[cluster][obs] = struct{}{}
}

func (s *Server) removeObserver(cluster string, obs *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.observers[cluster], obs)
	if len(s.observers[cluster]) == 0 {
		delete(s.observers, cluster)
	}
}

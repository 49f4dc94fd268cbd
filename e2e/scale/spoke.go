package scale

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/hubclient"
)

// The simulated spoke reconnects as spoke/hubclient does: to the next replica of its list, at
// once when the last one did not welcome it, else after a jittered exponential backoff from
// 200 ms to 10 s (each wait 0.5 to 1.5 times the interval), started again from the bottom after
// a session that lasted 10 s, and at most a sixth of the lease TTL (jittered) for the TTL after
// a session ended; after one to 1.1 times a busy replica's retry delay, without
// growing the backoff; and a new connection per session.
const (
	minBackoff     = 200 * time.Millisecond
	maxBackoff     = 10 * time.Second
	healthySession = 10 * time.Second
	welcomeTimeout = 10 * time.Second
	// importReportEvery bounds how often an importing spoke resends its import report while
	// the imports in its view change (the hub allows one per min_report_interval after a burst).
	importReportEvery = time.Second
)

// simSpoke is one simulated spoke: a cluster that registers, keeps a Sync session, exports its
// pools, reports their capacity on a fixed period and, when it imports, wants the capacity of
// every pool of the fleet and reports an InferencePoolImport for each pool in its view. It
// speaks the protocol directly (not through spoke/hubclient) so that a thousand of them cost the
// machine little beside the hub under test.
type simSpoke struct {
	d        *driver
	id       string
	index    int
	addrs    []string // the hub replicas, in the order this spoke tries them
	info     *pb.ClusterInfo
	exports  []*pb.Export
	importer bool
	// observer: an importer that measures staleness (Options.Observers of them).
	observer    bool
	tls         *tls.Config
	incarnation string
	rng         *rand.Rand

	// seq is the last export delta sent; cursor the view position of the last update applied.
	seq    uint64
	cursor atomic.Pointer[pb.ViewCursor]
	// converged is true while the spoke holds a session whose exports the hub acknowledged and
	// whose view it received complete.
	converged atomic.Bool
	// leaseTTL is the session lease TTL of the last Welcome.
	leaseTTL atomic.Int64
}

func (s *simSpoke) run(ctx context.Context) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.RandomizationFactor = minBackoff, maxBackoff, 0.5
	var leaseAlive time.Time
	for i := 0; ctx.Err() == nil; i++ {
		started := time.Now()
		established, err := s.session(ctx, s.addrs[i%len(s.addrs)])
		ttl := time.Duration(s.leaseTTL.Load())
		if established {
			leaseAlive = time.Now().Add(ttl)
		}
		s.converged.Store(false)
		if ctx.Err() != nil {
			return
		}
		s.d.sessionsEnded.Add(1)
		s.d.lastErr.Store(fmt.Sprintf("%s: %v", s.id, err))
		if !established && (i+1)%len(s.addrs) != 0 {
			continue // the next replica at once; a backoff once every one has failed
		}
		if established && time.Since(started) > healthySession {
			bo.Reset()
		}
		var wait time.Duration
		if d := hubclient.RetryDelay(err); d > 0 {
			wait = time.Duration(float64(d) * (1 + s.rng.Float64()/10))
		} else {
			wait = bo.NextBackOff()
			if time.Now().Before(leaseAlive) {
				wait = min(wait, time.Duration(float64(ttl/6)*(0.5+s.rng.Float64()/2)))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session holds one session on a connection of its own until it breaks; established is true
// when the hub welcomed it.
func (s *simSpoke) session(ctx context.Context, addr string) (established bool, err error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(s.tls)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	cli := pb.NewSyncServiceClient(conn)
	rctx, cancel := context.WithTimeout(ctx, welcomeTimeout)
	_, err = cli.Register(rctx, &pb.RegisterRequest{Cluster: s.info})
	cancel()
	if err != nil {
		return false, fmt.Errorf("register: %w", err)
	}
	sctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	stream, err := cli.Sync(sctx, grpc.ForceCodecV2(leanCodec{}))
	if err != nil {
		return false, err
	}
	hello := &pb.Hello{ClusterId: s.id, SpokeIncarnation: s.incarnation, ViewCursor: s.cursor.Load()}
	interest := []*pb.Interest{{}}
	if s.importer {
		// As spoke/hubclient does: the Hello carries what fits, Interest parts the rest.
		interest = fleetpb.SplitInterest(&pb.Interest{CapacityInterest: s.d.allPools}, fleetpb.SpokePartBytes)
		hello.CapacityInterest, hello.InterestFollows = interest[0].GetCapacityInterest(), len(interest) > 1
	}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	noWelcome := time.AfterFunc(welcomeTimeout, func() { end(errors.New("no welcome in time")) })
	var first rawMessage
	err = stream.RecvMsg(&first)
	noWelcome.Stop()
	if err != nil {
		return false, fmt.Errorf("welcome: %w", err)
	}
	w, _, _, _, err := scanResponse(first.b, false)
	if err != nil {
		return false, fmt.Errorf("welcome: %w", err)
	}
	if w == nil {
		return false, errors.New("the first message is not a welcome")
	}
	s.leaseTTL.Store(int64(w.GetLeaseTtl().AsDuration()))
	for _, part := range interest[1:] {
		if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Interest{Interest: part}}); err != nil {
			return true, err
		}
	}
	acked := w.GetAckedExportSeq() >= s.seq && s.seq > 0
	if !acked {
		s.seq++
		d := &pb.ExportDelta{Seq: s.seq, ReplaceAll: true, Upserts: s.exports}
		if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: d}}); err != nil {
			return true, err
		}
	}
	// The receive side tells the send side (the one goroutine that sends) what it learnt.
	ackCh := make(chan uint64, 1)
	importsCh := make(chan []*pb.PoolRef, 1)
	complete := make(chan struct{}, 1)
	recvErr, recvDone := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(recvDone)
		recvErr <- s.recv(stream, ackCh, importsCh, complete)
	}()
	// The receive side ends before the session does: it writes the cursor the next Hello reads.
	defer func() {
		end(nil)
		conn.Close()
		<-recvDone
	}()

	report := time.NewTimer(time.Duration(s.rng.Int64N(int64(s.d.opts.ReportInterval))))
	defer report.Stop()
	var pendingImports []*pb.PoolRef
	var importTimer <-chan time.Time
	var lastImports time.Time
	viewComplete := false
	for {
		select {
		case <-sctx.Done():
			return true, context.Cause(sctx)
		case err := <-recvErr:
			return true, err
		case a := <-ackCh:
			acked = acked || a >= s.seq
		case <-complete:
			viewComplete = true
		case ps := <-importsCh:
			pendingImports = ps
			if importTimer == nil {
				importTimer = time.After(max(0, importReportEvery-time.Since(lastImports)))
			}
			continue
		case <-importTimer:
			importTimer, lastImports = nil, time.Now()
			if err := stream.Send(importReport(pendingImports)); err != nil {
				return true, err
			}
		case <-report.C:
			report.Reset(s.d.opts.ReportInterval)
			if err := stream.Send(s.capacity()); err != nil {
				return true, err
			}
		}
		s.converged.Store(acked && viewComplete)
	}
}

// recv applies the hub's messages until the stream breaks.
func (s *simSpoke) recv(stream pb.SyncService_SyncClient, ackCh chan uint64, importsCh chan []*pb.PoolRef, complete chan struct{}) error {
	imports := map[string]*pb.PoolRef{}
	var raw rawMessage
	var update *viewPart // the parts of an update so far: applied together with the last
	for {
		if err := stream.RecvMsg(&raw); err != nil {
			return err
		}
		_, ack, isAck, part, err := scanResponse(raw.b, s.observer)
		if err != nil {
			return fmt.Errorf("hub message: %w", err)
		}
		if isAck {
			replace(ackCh, ack)
		}
		if part == nil {
			continue
		}
		if s.observer {
			s.observe(part)
		}
		if update == nil {
			update = part
		} else {
			update.imports = append(update.imports, part.imports...)
			update.removed = append(update.removed, part.removed...)
			update.cursor, update.incomplete = part.cursor, part.incomplete
		}
		if part.more {
			continue
		}
		u := update
		update = nil
		s.cursor.Store(u.cursor)
		if !u.incomplete {
			replace(complete, struct{}{})
		}
		if s.importer && s.applyImports(imports, u) {
			ps := make([]*pb.PoolRef, 0, len(imports))
			for _, p := range imports {
				ps = append(ps, p)
			}
			replace(importsCh, ps)
		}
	}
}

// observe records how old each capacity report of a delta is on arrival: from the moment its
// spoke stamped it to now, on the driver's monotonic clock. A snapshot's reports are whatever
// the hub held, not fresh fan-out, and are not counted.
func (s *simSpoke) observe(p *viewPart) {
	if p.snapshot || !s.d.measuring.Load() {
		return
	}
	now := s.d.mono()
	for _, t := range p.stamps {
		s.d.staleness.record(now - t.Sub(s.d.start))
	}
}

// applyImports keeps the set of imports in the view; it reports whether the set changed.
func (s *simSpoke) applyImports(imports map[string]*pb.PoolRef, u *viewPart) bool {
	changed := false
	if u.snapshot && !u.incomplete {
		changed = len(imports) > 0
		clear(imports)
	}
	for _, p := range u.imports {
		k := poolKey(p)
		if _, ok := imports[k]; !ok {
			imports[k] = p
			changed = true
		}
	}
	if !u.incomplete {
		for _, p := range u.removed {
			if _, ok := imports[poolKey(p)]; ok {
				delete(imports, poolKey(p))
				changed = true
			}
		}
	}
	return changed
}

func (s *simSpoke) capacity() *pb.SyncRequest {
	r := &pb.CapacityReport{}
	stamp := s.d.stamp()
	for _, e := range s.exports {
		n := uint32(s.d.opts.Endpoints)
		c := &pb.PoolCapacity{
			Pool: e.GetPool(), ReadyEndpoints: n, TotalEndpoints: n,
			QueueDepth: uint32(s.rng.IntN(4 * int(n))), RunningRequests: uint32(s.rng.IntN(8 * int(n))),
			KvCacheUtilization: s.rng.Float64(), Saturation: s.rng.Float64(), ObservedAt: stamp,
		}
		if s.d.opts.ReportEndpoints {
			for i := range n {
				c.Endpoints = append(c.Endpoints, &pb.EndpointCapacity{
					Address:    fmt.Sprintf("10.%d.%d.%d:%d", s.index/256%256, s.index%256, i%256, 8000+i/256),
					QueueDepth: uint32(s.rng.IntN(4)), RunningRequests: uint32(s.rng.IntN(8)), KvCacheUtilization: s.rng.Float64(), Ready: true,
				})
			}
		}
		r.Pools = append(r.Pools, c)
	}
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: r}}
}

func importReport(pools []*pb.PoolRef) *pb.SyncRequest {
	r := &pb.ImportReport{}
	for _, p := range pools {
		r.Pools = append(r.Pools, &pb.PoolImportStatus{Pool: p, Imported: true})
	}
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Imports{Imports: r}}
}

// replace puts v in a channel of one, replacing what it held.
func replace[T any](ch chan T, v T) {
	select {
	case <-ch:
	default:
	}
	ch <- v
}

func poolKey(p *pb.PoolRef) string { return p.GetNamespace() + "/" + p.GetName() }

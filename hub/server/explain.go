package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// ErrNoSessionHere means the cluster's spoke holds no session on this replica: only the replica
// that holds it can ask the spoke (hubctl then tries the next replica).
var ErrNoSessionHere = errors.New("the cluster's spoke holds no session on this hub replica")

// ErrCannotExplain means the spoke cannot explain: it did not offer to (an older version), or
// it answered that it has no explanation (no EPP, another pool).
var ErrCannotExplain = errors.New("the cluster's spoke cannot explain the request")

// Bounds of an explanation's request and answer, and how long the spoke has to answer.
const (
	maxExplainPrompt      = 64 << 10
	maxExplainAnswerBytes = 1 << 20
	explainTimeout        = 5 * time.Second
	// explainQueue bounds the queries waiting for a stream's send loop.
	explainQueue = 8
)

// explains is a session's side of the explain queries: those sent and not yet answered.
type explains struct {
	// offered is the Hello's explains: the spoke answers queries.
	offered bool
	queries chan *pb.ExplainQuery

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan *pb.ExplainAnswer
}

func newExplains(offered bool) *explains {
	return &explains{offered: offered, queries: make(chan *pb.ExplainQuery, explainQueue), waiting: map[uint64]chan *pb.ExplainAnswer{}}
}

// ask sends a query to the stream's send loop and waits for the spoke's answer.
func (e *explains) ask(ctx context.Context, done <-chan struct{}, req *pb.ExplainRequest) (*pb.ExplainAnswer, error) {
	ch := make(chan *pb.ExplainAnswer, 1)
	e.mu.Lock()
	e.next++
	id := e.next
	e.waiting[id] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.waiting, id)
		e.mu.Unlock()
	}()
	select {
	case e.queries <- &pb.ExplainQuery{Id: id, Request: req}:
	case <-done:
		return nil, ErrNoSessionHere
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case a := <-ch:
		return a, nil
	case <-done:
		return nil, ErrNoSessionHere
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// answer hands the spoke's answer to the query waiting for it; an answer nobody waits for (late,
// or never asked) is dropped.
func (e *explains) answer(a *pb.ExplainAnswer) {
	e.mu.Lock()
	ch, ok := e.waiting[a.GetId()]
	delete(e.waiting, a.GetId())
	e.mu.Unlock()
	if ok {
		ch <- a
	}
}

// Explain asks the cluster's spoke, over its session on this replica, where a request entering
// the cluster would go now and why. The spoke's EPP answers by the code that routes every
// request (pkg/epp's Explain); the hub passes its JSON through.
func (s *Server) Explain(ctx context.Context, req *pb.ExplainRequest) (*pb.ExplainResponse, error) {
	id := req.GetClusterId()
	if err := checkName("cluster_id", id, 253, false); err != nil {
		return nil, s.fail(err)
	}
	if req.GetPool() != nil {
		if err := validatePoolRef("pool", req.GetPool()); err != nil {
			return nil, s.fail(err)
		}
	}
	switch {
	case len(req.GetObjective()) > 253:
		return nil, s.fail(fmt.Errorf("%w: objective longer than 253 bytes", ErrInvalidArgument))
	case len(req.GetModel()) > 1024:
		return nil, s.fail(fmt.Errorf("%w: model longer than 1024 bytes", ErrInvalidArgument))
	case len(req.GetPrompt()) > maxExplainPrompt:
		return nil, s.fail(fmt.Errorf("%w: prompt longer than %d bytes", ErrInvalidArgument, maxExplainPrompt))
	}
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	if _, ok := s.model.Cluster(id); !ok {
		return nil, s.fail(fmt.Errorf("cluster %s: %w", id, registry.ErrNotFound))
	}
	s.mu.Lock()
	cur := s.sessions[id]
	s.mu.Unlock()
	if cur == nil || !cur.live() {
		return nil, s.fail(fmt.Errorf("cluster %s, hub replica %s: %w", id, s.opts.HubID, ErrNoSessionHere))
	}
	if !cur.explains.offered {
		return nil, s.fail(fmt.Errorf("cluster %s: %w: its spoke does not answer explain queries (a version before them)", id, ErrCannotExplain))
	}
	ctx, cancel := context.WithTimeout(ctx, explainTimeout)
	defer cancel()
	a, err := cur.explains.ask(ctx, cur.done, req)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil, s.fail(fmt.Errorf("cluster %s: no answer from its spoke within %s: %w", id, explainTimeout, err))
	}
	if err != nil {
		return nil, s.fail(fmt.Errorf("cluster %s: %w", id, err))
	}
	if msg := a.GetError(); msg != "" {
		return nil, s.fail(fmt.Errorf("cluster %s: %w: %s", id, ErrCannotExplain, msg))
	}
	return &pb.ExplainResponse{ClusterId: id, HubId: s.opts.HubID, Explanation: a.GetExplanation()}, nil
}

package server

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// IncompleteStart is the reason RunStartGrace marks the view incomplete with.
const IncompleteStart = "start"

// spokeReconnectWait is the longest a spoke waits between two attempts to reach the hub: the
// hub client's backoff (spoke/hubclient) doubles to 10 s, jittered up to 1.5 times.
const spokeReconnectWait = 15 * time.Second

// settleCheck is how often RunStartGrace looks for the clusters still away.
const settleCheck = 200 * time.Millisecond

// RunStartGrace marks the view incomplete (IncompleteStart) from the hub's first load of the
// registry until every registered cluster has a live session that stored its exports again, or
// for Options.StartGrace at most (the session lease TTL, plus the longest a spoke waits between
// two attempts to reconnect). A hub that starts after every replica was down longer than
// the lease TTL finds the clusters' exports gone with their leases: the spokes were alive all
// along and resend them as soon as they reconnect, so the withdrawals the registry shows then
// are the hub's outage, not the fleet's, and no spoke acts on them meanwhile. A session whose
// replica died (every replica killed and restarted within the lease TTL, say) is not live
// either, though its lease may be: the mark stays until its spoke reconnected, so that a spoke
// slow to come back has its exports lapse in an incomplete view. A replica that starts beside
// live ones finds their sessions live and lifts the mark at once.
func (s *Server) RunStartGrace(ctx context.Context) error {
	if err := s.model.WaitLoaded(ctx); err != nil {
		return nil
	}
	wait := s.opts.StartGrace
	if wait <= 0 {
		wait = s.store.LeaseTTL() + spokeReconnectWait
	}
	grace := time.NewTimer(wait)
	defer grace.Stop()
	tick := time.NewTicker(settleCheck)
	defer tick.Stop()
	defer s.model.ClearIncomplete(IncompleteStart)
	for {
		left := s.model.Unsettled(s.liveReplicas(ctx))
		if len(left) == 0 {
			s.syncLog.Info("every registered cluster is back after the hub's start")
			return nil
		}
		s.model.SetIncomplete(IncompleteStart, fmt.Sprintf("waiting for %d registered clusters to reconnect and resend their exports after the hub's start: %s",
			len(left), strings.Join(left[:min(len(left), 10)], ", ")))
		select {
		case <-ctx.Done():
			return nil
		case <-grace.C:
			s.syncLog.Warn("registered clusters did not reconnect within the start grace after the hub's start; their exports count as withdrawn", "clusters", len(left), "grace", wait)
			return nil
		case <-tick.C:
		}
	}
}

// liveReplicas returns the registered hub replicas, ID → incarnation; nil when the registry
// cannot be read, which leaves every session that names a replica unsettled.
func (s *Server) liveReplicas(ctx context.Context) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	hubs, _, err := s.store.Hubs(ctx)
	if err != nil {
		return nil
	}
	out := make(map[string]string, len(hubs))
	for id, h := range hubs {
		out[id] = h.Incarnation
	}
	return out
}

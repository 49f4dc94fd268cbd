package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// HubRecord is a hub replica's entry in the registry of replicas, hubs/<id>: where the other
// replicas reach its admin port (PeerService), and its incarnation (new at every start). It is
// held by the replica's election-session lease, so it goes when the replica dies or loses etcd.
type HubRecord struct {
	ID          string    `json:"id"`
	Address     string    `json:"address"`
	Incarnation string    `json:"incarnation"`
	StartedAt   time.Time `json:"startedAt"`
}

// HubEvent is a change of the registry of replicas: a replica's record written, or deleted.
type HubEvent struct {
	Deleted bool
	Hub     HubRecord
}

func (s *Store) hubsPrefix() string { return s.prefix + "hubs/" }

// HubKey is the key of a replica's record.
func (s *Store) HubKey(id string) string { return s.hubsPrefix() + id }

// ElectionPrefix is the key prefix of the leader election of the hub replicas.
func (s *Store) ElectionPrefix() string { return s.prefix + "leader/" }

// PutHub writes a replica's record under lease.
func (s *Store) PutHub(ctx context.Context, rec HubRecord, lease clientv3.LeaseID) error {
	if rec.ID == "" || strings.Contains(rec.ID, "/") {
		return fmt.Errorf("hub ID %q: %w", rec.ID, ErrInvalid)
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.HubKey(rec.ID), string(val), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("write hub record %q: %w", rec.ID, err)
	}
	return nil
}

// Hubs reads the registry of replicas and the revision it was read at.
func (s *Store) Hubs(ctx context.Context) (map[string]HubRecord, int64, error) {
	resp, err := s.cli.Get(ctx, s.hubsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("read hub records: %w", err)
	}
	out := make(map[string]HubRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if ev, err := s.decodeHub(kv.Key, kv.Value, false); err == nil {
			out[ev.Hub.ID] = ev.Hub
		}
	}
	return out, resp.Header.Revision, nil
}

// HubsAndLeader reads the registry of replicas and the election in one transaction (at one
// revision), and returns which of the replicas leads: the one whose record is under the lease of
// the election's oldest campaign ("" when none is, as while a dead leader's lease has not lapsed
// yet and its replica restarted under the same ID).
func (s *Store) HubsAndLeader(ctx context.Context) (map[string]HubRecord, string, error) {
	// concurrency.NewElection keys a campaign <prefix>/<lease>.
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.hubsPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(s.ElectionPrefix()+"/", clientv3.WithFirstCreate()...),
	).Commit()
	if err != nil {
		return nil, "", fmt.Errorf("read hub records and the hub election: %w", err)
	}
	hubs := map[string]HubRecord{}
	leases := map[clientv3.LeaseID]string{}
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		if ev, err := s.decodeHub(kv.Key, kv.Value, false); err == nil {
			hubs[ev.Hub.ID] = ev.Hub
			leases[clientv3.LeaseID(kv.Lease)] = ev.Hub.ID
		}
	}
	leader := ""
	if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 && kvs[0].Lease != 0 {
		leader = leases[clientv3.LeaseID(kvs[0].Lease)]
	}
	return hubs, leader, nil
}

func (s *Store) decodeHub(key, val []byte, deleted bool) (HubEvent, error) {
	id, ok := strings.CutPrefix(string(key), s.hubsPrefix())
	if !ok || id == "" || strings.Contains(id, "/") {
		return HubEvent{}, fmt.Errorf("hub key %q: %w", key, ErrInvalid)
	}
	ev := HubEvent{Deleted: deleted, Hub: HubRecord{ID: id}}
	if deleted {
		return ev, nil
	}
	if err := json.Unmarshal(val, &ev.Hub); err != nil {
		return HubEvent{}, fmt.Errorf("decode hub record %q: %w", key, err)
	}
	ev.Hub.ID = id
	return ev, nil
}

// WatchHubs calls fn for every change of the registry of replicas after revision rev until ctx
// ends. It returns an error when the watch cannot continue (compaction, no etcd leader); the
// caller then reads again.
func (s *Store) WatchHubs(ctx context.Context, rev int64, fn func([]HubEvent)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.cli.Watch(wctx, s.hubsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch hub records: %w", err)
		}
		evs := make([]HubEvent, 0, len(resp.Events))
		for _, e := range resp.Events {
			if ev, err := s.decodeHub(e.Kv.Key, e.Kv.Value, e.Type == clientv3.EventTypeDelete); err == nil {
				evs = append(evs, ev)
			}
		}
		if len(evs) > 0 {
			fn(evs)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch hub records: channel closed")
}

package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrGatewayTaken is wrapped by every GatewayTakenError.
var ErrGatewayTaken = errors.New("gateway address registered by another cluster")

// GatewayTakenError refuses a registration whose gateway address another registered cluster
// holds: the address other clusters spill that cluster's traffic to is its own.
type GatewayTakenError struct {
	// Address is the gateway address asked for; Cluster the cluster that asked, Owner the one
	// that holds it.
	Address string
	Cluster string
	Owner   string
}

func (e *GatewayTakenError) Error() string {
	return fmt.Sprintf("cluster %s may not register gateway address %s: cluster %s has it registered (if %s no longer uses it: hubctl clusters revoke %s --remove)",
		e.Cluster, e.Address, e.Owner, e.Owner, e.Owner)
}

// Unwrap makes a GatewayTakenError match ErrGatewayTaken.
func (e *GatewayTakenError) Unwrap() error { return ErrGatewayTaken }

// NormalizeGatewayAddress returns the form of a host:port gateway address that the index keys:
// the host in lower case without a final dot, an IP address in its canonical form, the port as
// a plain number. Two spellings of one address normalise alike; a name and an address it
// resolves to do not. An address that is not host:port is returned in lower case.
func NormalizeGatewayAddress(addr string) string {
	addr = strings.ToLower(addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	host = strings.TrimRight(host, ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	if p, err := strconv.Atoi(port); err == nil {
		port = strconv.Itoa(p)
	}
	return net.JoinHostPort(host, port)
}

// gatewayKey is the index entry of a gateway address: it holds the ID of the cluster that
// registered it.
func (s *Store) gatewayKey(addr string) string {
	return s.prefix + "gateways/" + url.PathEscape(NormalizeGatewayAddress(addr))
}

// gatewayOwner reads the index entry of addr: the cluster holding it and the entry's revision
// (0 when no cluster does).
func (s *Store) gatewayOwner(ctx context.Context, addr string) (owner string, rev int64, err error) {
	resp, err := s.cli.Get(ctx, s.gatewayKey(addr))
	if err != nil {
		return "", 0, fmt.Errorf("read the holder of gateway address %s: %w", addr, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, nil
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision, nil
}

// gatewayOps are the compares and operations that move cluster's index entry from the gateway
// address oldAddr to newAddr (either may be empty) in the transaction that writes its record,
// or a GatewayTakenError when another cluster holds newAddr.
func (s *Store) gatewayOps(ctx context.Context, cluster, oldAddr, newAddr string) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	if newAddr != "" {
		owner, rev, err := s.gatewayOwner(ctx, newAddr)
		if err != nil {
			return nil, nil, err
		}
		if owner != "" && owner != cluster {
			return nil, nil, &GatewayTakenError{Address: newAddr, Cluster: cluster, Owner: owner}
		}
		cmps = append(cmps, unchanged(s.gatewayKey(newAddr), rev))
		if owner == "" {
			ops = append(ops, clientv3.OpPut(s.gatewayKey(newAddr), cluster))
		}
	}
	if oldAddr != "" && NormalizeGatewayAddress(oldAddr) != NormalizeGatewayAddress(newAddr) {
		owner, rev, err := s.gatewayOwner(ctx, oldAddr)
		if err != nil {
			return nil, nil, err
		}
		if owner == cluster {
			cmps = append(cmps, unchanged(s.gatewayKey(oldAddr), rev))
			ops = append(ops, clientv3.OpDelete(s.gatewayKey(oldAddr)))
		}
	}
	return cmps, ops, nil
}

// IndexGateways gives every registered cluster whose gateway address has no index entry one:
// the records written before the index existed. When several clusters hold one address, the one
// registered first keeps it, and the others' next registrations are refused. It returns those
// others (cluster → the cluster holding its address). Every hub replica may call it at its start:
// each entry is created in a transaction that creates it only when absent.
func (s *Store) IndexGateways(ctx context.Context) (map[string]string, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"clusters/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	recs := make([]ClusterRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ev, err := s.decode(string(kv.Key), kv.Value, false)
		if err == nil && ev.Kind == KindCluster && ev.ClusterRecord.Info.GatewayAddress != "" {
			ev.ClusterRecord.Info.ID = ev.Cluster
			recs = append(recs, ev.ClusterRecord)
		}
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].RegisteredAt.Before(recs[j].RegisteredAt) })
	conflicts := map[string]string{}
	for _, rec := range recs {
		key := s.gatewayKey(rec.Info.GatewayAddress)
		txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, rec.Info.ID)).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return nil, fmt.Errorf("index the gateway address of %q: %w", rec.Info.ID, err)
		}
		if txn.Succeeded {
			continue
		}
		if kvs := txn.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 && string(kvs[0].Value) != rec.Info.ID {
			conflicts[rec.Info.ID] = string(kvs[0].Value)
		}
	}
	return conflicts, nil
}

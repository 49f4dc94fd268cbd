package e2e

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// defaultMaxMessage is gRPC's default receive limit, the one hubctl and most clients keep.
const defaultMaxMessage = 4 << 20

// TestViewLargerThanAGRPCMessage runs a fleet whose view is larger than gRPC's default 4 MiB
// message, through a real hub and real spoke hub clients over mutual TLS: two clusters export
// 1,000 pools each, with labels (over 1 MiB of exports each), and report the capacity of every endpoint (100 per pool); a
// third wants every pool's capacity and reports an import state for each. Every direction goes
// in parts: the export resends, the capacity reports, the interest and the import report (each
// over the 512 KiB a spoke puts in one message, the hub taking at most 1 MiB), the view the
// third spoke receives, the admin Watch (read with the default 4 MiB limit), and the admin lists
// come page by page.
func TestViewLargerThanAGRPCMessage(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	const pools, endpoints = 1000, 100
	a, b := startSpoke(t, h, "a", "us-east"), startSpoke(t, h, "b", "us-west")
	c := startSpoke(t, h, "c", "eu-west")
	var all []fleet.PoolRef
	labels := map[string]string{}
	for i := range 12 {
		labels[fmt.Sprintf("example.com/label-%d", i)] = strings.Repeat("v", 60)
	}
	for i, s := range []*spoke{a, b} {
		var exps []fleet.Export
		var caps []fleet.PoolCapacity
		for j := range pools {
			p := fleet.PoolRef{Namespace: "large", Name: fmt.Sprintf("%c-%04d-%s", 'a'+i, j, strings.Repeat("n", 230))}
			all = append(all, p)
			exps = append(exps, fleet.Export{Pool: p, TargetPorts: []uint32{8000}, Labels: labels})
			cp := fleet.PoolCapacity{Pool: p, ReadyEndpoints: endpoints, TotalEndpoints: endpoints, QueueDepth: uint32(j)}
			for e := range endpoints {
				cp.Endpoints = append(cp.Endpoints, fleet.EndpointCapacity{Address: fmt.Sprintf("10.%d.%d.%d:8000", i, j%250, e), QueueDepth: uint32(e), Ready: true})
			}
			caps = append(caps, cp)
		}
		s.client.SetExports(exps)
		s.client.SetCapacity(caps)
	}
	c.client.SetInterest(all)
	var states []fleet.PoolImportStatus
	for _, p := range all {
		states = append(states, fleet.PoolImportStatus{Pool: p, Reason: "NamespaceNotFound", Message: "namespace large does not exist in cluster c"})
	}
	c.client.SetImportStatus(states)

	view := c.client.View()
	testkit.Eventually(t, 2*time.Minute, "c holds every pool with every endpoint's capacity", func() error {
		if n := len(view.Imports()); n != 2*pools {
			return fmt.Errorf("%d imports, want %d", n, 2*pools)
		}
		for _, p := range []fleet.PoolRef{all[0], all[pools-1], all[pools], all[2*pools-1]} {
			caps := view.Capacity(p)
			if len(caps) != 1 || len(caps[0].Capacity.Endpoints) != endpoints {
				return fmt.Errorf("capacity of %s: %d reports", p.Name[:6], len(caps))
			}
		}
		return nil
	})
	// The claim of the test: what c received is more than one message could have held.
	u := &pb.ViewUpdate{}
	for _, imp := range view.Imports() {
		u.Imports = append(u.Imports, fleetpb.Import(imp))
		for _, rc := range view.Capacity(imp.Pool) {
			u.Capacity = append(u.Capacity, fleetpb.RemoteCapacity(rc))
		}
	}
	if n := proto.Size(u); n <= defaultMaxMessage {
		t.Fatalf("the view is %d bytes, not larger than one %d-byte message: the test proves nothing", n, defaultMaxMessage)
	}
	for _, p := range all {
		if n := len(view.Capacity(p)); n != 1 {
			t.Fatalf("%s: %d capacity reports, want 1", p.Name[:6], n)
		}
	}
	testkit.Eventually(t, 30*time.Second, "the hub holds c's import state for every pool", func() error {
		for _, p := range []fleet.PoolRef{all[0], all[2*pools-1]} {
			imp, ok := h.Model.Import(p)
			if !ok || len(imp.Importers) != 1 || imp.Importers[0].Reason != "NamespaceNotFound" {
				return fmt.Errorf("%s: importers %+v", p.Name[:6], imp.Importers)
			}
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The admin lists, page by page, each within a default message.
	pages, listed, token := 0, 0, ""
	for {
		resp, err := h.Admin().ListPools(ctx, &pb.ListPoolsRequest{PageToken: token})
		if err != nil {
			t.Fatalf("page %d: %v", pages+1, err)
		}
		pages++
		listed += len(resp.GetPools())
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if listed != 2*pools || pages < 2 {
		t.Fatalf("ListPools: %d pools in %d pages, want %d in several", listed, pages, 2*pools)
	}
	// The admin Watch's snapshot, in parts, with the default receive limit.
	w, err := h.Admin().Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snapshot := &pb.ViewUpdate{}
	parts := 0
	for {
		resp, err := w.Recv()
		if err == io.EOF || err != nil {
			t.Fatalf("watch after %d parts: %v", parts, err)
		}
		parts++
		proto.Merge(snapshot, resp.GetUpdate())
		if !resp.GetUpdate().GetMore() {
			break
		}
	}
	if !snapshot.GetSnapshot() || len(snapshot.GetImports()) != 2*pools || len(snapshot.GetCapacity()) != 2*pools || parts < 2 {
		t.Fatalf("watch snapshot in %d parts: snapshot %v, %d imports, %d capacity reports; want several parts, %d of each",
			parts, snapshot.GetSnapshot(), len(snapshot.GetImports()), len(snapshot.GetCapacity()), 2*pools)
	}
}

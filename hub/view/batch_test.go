package view

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// TestBatchedReportsReachTheView: while Batch runs, capacity reports from many streams at once
// are applied in batches: every cluster's last report is in the view, subscribers are woken,
// and once Batch stops a report is applied at once again.
func TestBatchedReportsReachTheView(t *testing.T) {
	m := New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Batch(ctx)
	}()
	testkit.Eventually(t, 5*time.Second, "batching", testkit.True(m.batching.Load))
	cur := m.Since("", 0, nil).Seq
	changed := m.Changed()
	const clusters, reports = 50, 100
	var wg sync.WaitGroup
	for c := range clusters {
		wg.Go(func() {
			for i := range reports {
				m.ReportCapacity(fmt.Sprint("c", c), []fleet.PoolCapacity{{Pool: chat, QueueDepth: uint32(i)}}, nil)
			}
		})
	}
	wg.Wait()
	testkit.Eventually(t, 5*time.Second, "every cluster's last report", func() error {
		u := m.Since(m.Incarnation(), cur, nil)
		if len(u.Capacity) != clusters {
			return fmt.Errorf("%d clusters' capacity, want %d", len(u.Capacity), clusters)
		}
		for _, rc := range u.Capacity {
			if rc.Capacity.QueueDepth != reports-1 {
				return fmt.Errorf("%s: queue %d, want the last report's %d", rc.ClusterID, rc.Capacity.QueueDepth, reports-1)
			}
		}
		return nil
	})
	select {
	case <-changed:
	default:
		t.Fatal("subscribers were not woken")
	}
	cancel()
	<-done
	m.ReportCapacity("late", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 7}}, nil)
	if u := m.Since("", 0, nil); len(u.Capacity) != clusters+1 {
		t.Fatalf("after Batch stopped: %d clusters' capacity, want %d at once", len(u.Capacity), clusters+1)
	}
}

// TestBatchedImportReportsKeepTheirOrder: while Batch runs, import reports are queued with the
// capacity reports; each cluster's last report is what the view holds, and a session that ends
// after a report was queued takes the report with it (the registry event comes after it).
func TestBatchedImportReportsKeepTheirOrder(t *testing.T) {
	m := New()
	m.Apply(append(sessionEvents("a", "b", "c"),
		exportEvent("a", false),
	))
	// Batch runs, but nothing tells it to flush: every report stays queued until Apply.
	m.batching.Store(true)
	m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Reason: "Conflict"}})
	m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	m.ReportImports("c", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	if imp, _ := m.Import(chat); len(imp.Importers) != 0 {
		t.Fatalf("queued reports applied before a batch: %+v", imp.Importers)
	}
	m.Apply([]registry.Event{{Kind: registry.KindSession, Cluster: "c", Deleted: true}})
	imp, _ := m.Import(chat)
	if len(imp.Importers) != 1 || imp.Importers[0] != (fleet.ImportStatus{ClusterID: "b", Imported: true}) {
		t.Fatalf("importers %+v, want b's last report alone (c's session ended after its report)", imp.Importers)
	}
	m.batching.Store(false)
}

package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/spillway-io/spillway/hub/kube"
	"github.com/spillway-io/spillway/pkg/budget"
)

// budgetsPoll is how often the budgets file is read again.
const budgetsPoll = 2 * time.Second

// readBudgets reads and checks the budgets file.
func readBudgets(path, tenantHeader string) (budget.Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return budget.Set{}, err
	}
	return budget.ParseFile(data, tenantHeader)
}

// followBudgets gives the allocator the budgets file's declarations, and the new ones each time
// the file changes, until ctx ends. A file that no longer reads or parses is logged and leaves
// the budgets as they were: an edit in progress never drops them.
func followBudgets(ctx context.Context, path, tenantHeader string, alloc *budget.Allocator, log *slog.Logger) error {
	var last []byte
	tick := time.NewTicker(budgetsPoll)
	defer tick.Stop()
	for {
		data, err := os.ReadFile(path)
		switch {
		case err != nil:
			log.Error("budgets file not read; the budgets stay as they were", "file", path, "err", err)
		case !bytes.Equal(data, last):
			set, err := budget.ParseFile(data, tenantHeader)
			if err != nil {
				log.Error("budgets file refused; the budgets stay as they were", "file", path, "err", err)
				break
			}
			last = data
			if alloc.SetBudgets(set) {
				log.Info("budgets declared", "file", path, "budgets", len(set.Budgets))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// loadBudgets gives the allocator the file's budgets before the hub serves.
func loadBudgets(path, tenantHeader string, alloc *budget.Allocator) error {
	set, err := readBudgets(path, tenantHeader)
	if err != nil {
		return fmt.Errorf("--budgets-file: %w", err)
	}
	alloc.SetBudgets(set)
	return nil
}

// klogOnce sets client-go's logger once per process: one log stream, one format. The first hub
// of the process sets it (tests run several).
var klogOnce sync.Once

// startTokenBudgets gives the allocator the TokenBudgets of the hub's cluster, and returns the
// watcher that follows them, once it has listed them: before the hub serves.
func startTokenBudgets(ctx context.Context, cfg *Config, alloc *budget.Allocator, log *slog.Logger) (*kube.Watcher, error) {
	klogOnce.Do(func() { klog.SetSlogLogger(cfg.Logger.With("component", "client-go")) })
	dyn, err := dynamic.NewForConfig(cfg.KubeConfig)
	if err != nil {
		return nil, fmt.Errorf("--budgets-from-cluster: %w", err)
	}
	w, err := kube.Start(ctx, kube.Options{
		Client: dyn, Namespace: cfg.BudgetsNamespace, TenantHeader: cfg.TenantHeader, Allocator: alloc, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("--budgets-from-cluster: %w", err)
	}
	return w, nil
}

package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

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

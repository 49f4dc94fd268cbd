package apiserver

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"
)

// CRDPaths are the CRD manifests a spoke's cluster needs, relative to the repository root:
// GIE's InferencePool and InferencePoolImport, MCS-API's ServiceExport and ServiceImport,
// KEP-2149's ClusterProperty and Spillway's SpillPolicy (deploy/crds), Spillway's TokenBudget (the
// hub's cluster's, beside them in deploy/crds/spillway), GIE v1.5's InferenceObjective and
// prometheus-operator's ServiceMonitor (testdata).
var CRDPaths = []string{"deploy/crds/upstream", "deploy/crds/clusterproperty", "deploy/crds/spillway", "e2e/apiserver/testdata"}

// InstallCRDs applies the CRD manifests at paths (files or directories of plain manifests,
// relative to root) with server-side apply and waits until the API server serves them.
func (c *Cluster) InstallCRDs(ctx context.Context, root string, paths ...string) error {
	args := []string{"apply", "--server-side", "--field-manager=spillway-test"}
	for _, p := range paths {
		args = append(args, "-f", filepath.Join(root, p))
	}
	if _, err := c.Kubectl(ctx, args...); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "wait", "--for", "condition=established", "--timeout=60s", "crd", "--all")
	return err
}

// StartWithCRDs starts one cluster per name in parallel, each in dir/<name> on 127.0.0.1 with the
// CRDs of CRDPaths (relative to root) installed. The clusters already started are returned with
// an error too: the caller stops them.
func StartWithCRDs(ctx context.Context, bins Bins, dir, root string, names ...string) (map[string]*Cluster, error) {
	out := map[string]*Cluster{}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for _, name := range names {
		g.Go(func() error {
			c, err := Start(gctx, bins, filepath.Join(dir, name), name, "127.0.0.1")
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			mu.Lock()
			out[name] = c
			mu.Unlock()
			if err := c.InstallCRDs(gctx, root, CRDPaths...); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	err := g.Wait()
	return out, err
}

// StartOne starts one cluster named name for a test, as StartWithCRDs does (root is the
// repository root relative to the test's package), stops it when the test ends, and fails the
// test when it cannot start.
func StartOne(ctx context.Context, t testing.TB, root, name string) *Cluster {
	t.Helper()
	bins, err := FindBins(root)
	if err != nil {
		t.Fatal(err)
	}
	apis, err := StartWithCRDs(ctx, bins, t.TempDir(), root, name)
	t.Cleanup(func() {
		for _, c := range apis {
			c.Stop()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return apis[name]
}

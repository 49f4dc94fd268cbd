package kube

import (
	"context"
	"path/filepath"
)

// CRDPaths are the CRD manifests a spoke's cluster needs, relative to the repository root:
// GIE's InferencePool and InferencePoolImport, MCS-API's ServiceExport and ServiceImport,
// KEP-2149's ClusterProperty and Spillway's SpillPolicy (deploy/crds), GIE v1.5's InferenceObjective and
// prometheus-operator's ServiceMonitor (testdata).
var CRDPaths = []string{"deploy/crds/upstream", "deploy/crds/clusterproperty", "deploy/crds/spillway", "e2e/kube/testdata"}

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

// Package deploy holds the kustomize bases that install Spillway on real clusters (hub/, spoke/,
// their optional components/, the CRDs in crds/, examples/ of overlays) and the Dockerfiles of
// its images (docker/). It has no Go code of its own: its tests render the bases with kubectl's
// built-in kustomize, compare them with golden files, check the flags, probes and hardening the
// Deployments give the binaries and the security properties of every installation (keys only
// from Secrets mounted read-only, HTTPS probes and scrapes, the admin port never beside the
// spokes' port nor exposed), and apply everything to a real kube-apiserver, where every object
// must be accepted and the spoke's RBAC must allow what it needs and refuse the rest. They then
// run the real hub, hubctl and spoke as the examples' Deployments would (args, environment,
// Secrets and volumes): the spoke must become ready with its ServiceAccount's token, hold a
// session on the hub with a cert-manager-style Secret, and join with a token and an approval;
// and SpillPolicies must be defaulted and refused as their CRD documents. docs/install.md is the
// operator's guide.
package deploy

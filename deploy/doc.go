// Package deploy holds the kustomize bases that install Spillway on real clusters (hub/, spoke/,
// the CRDs in crds/, examples/ of overlays) and the Dockerfiles of its images (docker/). It has
// no Go code of its own: its tests render the bases with kubectl's built-in kustomize, compare
// them with golden files, check the flags, probes and hardening the Deployments give the
// binaries, and apply everything to a real kube-apiserver, where every object must be accepted,
// the spoke's RBAC must allow what it needs and refuse the rest, the real spoke must start and
// become ready with the Deployment's flags and its ServiceAccount's token, and SpillPolicies
// must be defaulted and refused as their CRD documents. docs/install.md is the operator's guide.
package deploy

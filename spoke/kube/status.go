package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	apixv1alpha1 "sigs.k8s.io/gateway-api-inference-extension/apix/v1alpha1"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// Reasons of the Exported condition besides GIE's.
const (
	// ReasonPending is the Exported=False reason while some live member of the ClusterSet has
	// not imported the pool yet (or the hub has not confirmed the export).
	ReasonPending = "Pending"
	// ReasonNotAllowedByHub is the Exported=False reason of a pool the hub's export policy
	// refuses (its namespace, or the per-cluster cap): the spoke leaves it out of its exports,
	// and the message names the hub's rule.
	ReasonNotAllowedByHub = "NotAllowedByHub"
)

// importGroup is the group of the parentRef Spillway writes on exported pools.
var importGroup = giev1.Group(apixv1alpha1.GroupName)

// syncExportStatus keeps Spillway's status.parents[] entry on every local pool: a parentRef of
// kind InferencePoolImport with the pool's namespace/name and the Exported condition, present
// while the pool carries the export annotation and removed when the annotation goes.
func (c *Controller) syncExportStatus(ctx context.Context, imports []fleet.Import) error {
	pools, err := c.gieInf.Inference().V1().InferencePools().Lister().List(labels.Everything())
	if err != nil {
		return err
	}
	byPool := make(map[fleet.PoolRef]fleet.Import, len(imports))
	for _, imp := range imports {
		byPool[imp.Pool] = imp
	}
	var clusters []fleet.Cluster
	if c.opts.View != nil {
		clusters = c.opts.View.Clusters()
	}
	var refused map[fleet.PoolRef]fleet.ExportRefusal
	if c.opts.Refused != nil {
		refused = c.opts.Refused.RefusedExports()
	}
	var errs []error
	for _, p := range pools {
		ref := fleet.PoolRef{Namespace: p.Namespace, Name: p.Name}
		want := c.exportedCondition(p, byPool[ref], clusters, refused)
		if c.parentCurrent(p, want) {
			continue
		}
		errs = append(errs, c.writeParent(ctx, ref, want))
	}
	return errors.Join(errs...)
}

// exportedCondition returns the Exported condition a pool should carry, nil for none. refused
// are the pools the hub client leaves out because the hub's export policy refuses them.
func (c *Controller) exportedCondition(p *giev1.InferencePool, imp fleet.Import, clusters []fleet.Cluster,
	refused map[fleet.PoolRef]fleet.ExportRefusal) *metav1.Condition {
	v, annotated := p.Annotations[apixv1alpha1.ExportAnnotationKey]
	if !annotated {
		return nil
	}
	cond := &metav1.Condition{Type: string(giev1.InferencePoolConditionExported), Status: metav1.ConditionFalse, ObservedGeneration: p.Generation}
	r, isRefused := refused[fleet.PoolRef{Namespace: p.Namespace, Name: p.Name}]
	switch {
	case v != apixv1alpha1.ExportAnnotationVal:
		cond.Reason = string(giev1.InferencePoolReasonNotSupported)
		cond.Message = fmt.Sprintf("export annotation value %q is not supported; use %q", v, apixv1alpha1.ExportAnnotationVal)
	case c.opts.View == nil:
		cond.Reason = string(giev1.InferencePoolReasonNotSupported)
		cond.Message = "this spoke runs without a hub (--hub-address is empty): nothing is exported"
	case isRefused:
		cond.Reason = ReasonNotAllowedByHub
		cond.Message = "the spoke leaves this pool out of its exports because the hub would refuse it: " + r.Message
	case !slices.Contains(imp.ExportingClusters, c.opts.ClusterID):
		cond.Reason = ReasonPending
		cond.Message = "waiting for the hub to record the export"
	default:
		cond.Reason, cond.Message = exportedEverywhere(imp, clusters)
		if cond.Reason == string(giev1.InferencePoolReasonExported) {
			cond.Status = metav1.ConditionTrue
		}
	}
	return cond
}

// exportedEverywhere checks that every live member of the ClusterSet imported the pool.
func exportedEverywhere(imp fleet.Import, clusters []fleet.Cluster) (reason, msg string) {
	states := make(map[string]fleet.ImportStatus, len(imp.Importers))
	for _, s := range imp.Importers {
		states[s.ClusterID] = s
	}
	var missing []string
	members := 0
	for _, cl := range clusters {
		if cl.State != fleet.StateAlive {
			continue
		}
		members++
		s, ok := states[cl.Info.ID]
		switch {
		case !ok:
			missing = append(missing, cl.Info.ID+": not reported yet")
		case !s.Imported:
			missing = append(missing, fmt.Sprintf("%s: %s: %s", cl.Info.ID, s.Reason, s.Message))
		}
	}
	if len(missing) > 0 {
		return ReasonPending, fmt.Sprintf("imported by %d of %d live member clusters; not yet by %s", members-len(missing), members, strings.Join(missing, "; "))
	}
	return string(giev1.InferencePoolReasonExported), fmt.Sprintf("imported by all %d live member clusters", members)
}

func (c *Controller) isOurParent(ps giev1.ParentStatus) bool {
	return string(ps.ControllerName) == c.opts.ControllerName && ps.ParentRef.Kind == "InferencePoolImport"
}

// parentCurrent reports whether the pool's status already matches want.
func (c *Controller) parentCurrent(p *giev1.InferencePool, want *metav1.Condition) bool {
	i := slices.IndexFunc(p.Status.Parents, c.isOurParent)
	if want == nil {
		return i < 0
	}
	if i < 0 {
		return false
	}
	got := meta.FindStatusCondition(p.Status.Parents[i].Conditions, want.Type)
	return got != nil && got.Status == want.Status && got.Reason == want.Reason && got.Message == want.Message &&
		got.ObservedGeneration == want.ObservedGeneration
}

// writeParent sets (or with want nil removes) Spillway's parent entry through the status
// subresource. status.parents is an atomic list, so a server-side apply would replace other
// controllers' entries: read, change our entry alone, update with the read resourceVersion, and
// retry on conflict.
func (c *Controller) writeParent(ctx context.Context, ref fleet.PoolRef, want *metav1.Condition) error {
	client := c.gie.InferenceV1().InferencePools(ref.Namespace)
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		p, err := client.Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		parents := slices.Clone(p.Status.Parents)
		i := slices.IndexFunc(parents, c.isOurParent)
		switch {
		case want == nil && i < 0:
			return nil
		case want == nil:
			parents = slices.Delete(parents, i, i+1)
		case i < 0:
			if len(parents) >= 32 {
				return fmt.Errorf("status.parents of %s is full (32 entries)", ref)
			}
			ns := giev1.Namespace(ref.Namespace)
			parents = append(parents, giev1.ParentStatus{
				ParentRef:      giev1.ParentReference{Group: &importGroup, Kind: "InferencePoolImport", Name: giev1.ObjectName(ref.Name), Namespace: ns},
				ControllerName: giev1.ControllerName(c.opts.ControllerName),
			})
			i = len(parents) - 1
			fallthrough
		default:
			conds := slices.Clone(parents[i].Conditions)
			meta.SetStatusCondition(&conds, *want)
			parents[i].Conditions = conds
		}
		p.Status.Parents = parents
		_, err = client.UpdateStatus(ctx, p, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil // the pool is gone; nothing to report on
	}
	if err != nil {
		return fmt.Errorf("update status of pool %s: %w", ref, err)
	}
	if want != nil {
		c.log.Info("pool export status updated", "pool", ref.String(), "status", want.Status, "reason", want.Reason)
	} else {
		c.log.Info("pool export status removed", "pool", ref.String())
	}
	return nil
}

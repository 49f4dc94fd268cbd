package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	apixv1alpha1 "sigs.k8s.io/gateway-api-inference-extension/apix/v1alpha1"
	apixac "sigs.k8s.io/gateway-api-inference-extension/client-go/applyconfiguration/apix/v1alpha1"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// errWaiting marks a standing condition that a later reconcile may clear (a namespace that may
// be created): retried with backoff, not logged as a failure.
var errWaiting = errors.New("waiting")

// FieldManager is the server-side apply field manager of everything the spoke writes.
const FieldManager = "spillway-spoke"

// DefaultWithdrawDelay is how long an import missing from the fleet view is kept before it is
// withdrawn (Options.WithdrawDelay).
const DefaultWithdrawDelay = 2 * time.Second

// Import condition and reasons.
const (
	// ImportConditionAccepted is the condition of Spillway's status.controllers[] entry: True
	// when the import lists the exporting clusters of the fleet view.
	ImportConditionAccepted = "Accepted"
	ReasonImported          = "Imported"
	// ReasonNamespaceNotFound: the pool's namespace does not exist here and the spoke may not
	// create it (--create-namespaces=false).
	ReasonNamespaceNotFound = "NamespaceNotFound"
	// ReasonForbidden: the spoke's RBAC does not allow the write.
	ReasonForbidden = "Forbidden"
	// ReasonApplyFailed: the API server refused or failed the write; it is retried.
	ReasonApplyFailed = "ApplyFailed"
)

// syncImports keeps one InferencePoolImport per pool of the fleet view and deletes the ones
// Spillway created for pools no longer exported anywhere. It returns what it holds per pool.
func (c *Controller) syncImports(ctx context.Context, imports []fleet.Import) ([]fleet.PoolImportStatus, error) {
	lister := c.gieInf.XInference().V1alpha1().InferencePoolImports().Lister()
	states := make([]fleet.PoolImportStatus, 0, len(imports))
	want := make(map[fleet.PoolRef]bool, len(imports))
	var errs []error
	for _, imp := range imports {
		want[imp.Pool] = true
		cur, err := lister.InferencePoolImports(imp.Pool.Namespace).Get(imp.Pool.Name)
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		if err == nil && c.importCurrent(cur, imp) {
			states = append(states, fleet.PoolImportStatus{Pool: imp.Pool, Imported: true})
			continue
		}
		st, err := c.applyImport(ctx, cur, imp)
		states = append(states, st)
		errs = append(errs, err)
	}
	for _, st := range states {
		if st.Reason == ReasonNamespaceNotFound {
			errs = append(errs, fmt.Errorf("%w: namespace %s for the import of %s", errWaiting, st.Pool.Namespace, st.Pool))
		}
	}
	held, err := lister.List(labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue}))
	if err != nil {
		errs = append(errs, err)
	}
	now := time.Now()
	holding := make(map[fleet.PoolRef]bool, len(held))
	for _, obj := range held {
		ref := fleet.PoolRef{Namespace: obj.Namespace, Name: obj.Name}
		holding[ref] = true
		if want[ref] {
			continue
		}
		since, ok := c.absentSince[ref]
		if !ok {
			since = now
			c.absentSince[ref] = now
		}
		if gone := now.Sub(since); gone < c.opts.WithdrawDelay {
			errs = append(errs, fmt.Errorf("%w: the import of %s left the fleet view %s ago; withdrawn once it stays out for %s",
				errWaiting, ref, gone.Round(time.Millisecond), c.opts.WithdrawDelay))
			continue
		}
		errs = append(errs, c.withdrawImport(ctx, obj))
	}
	for ref := range c.absentSince {
		if want[ref] || !holding[ref] {
			delete(c.absentSince, ref)
		}
	}
	return states, errors.Join(errs...)
}

// importCurrent reports whether cur already carries Spillway's entry for imp.
func (c *Controller) importCurrent(cur *apixv1alpha1.InferencePoolImport, imp fleet.Import) bool {
	if cur.Labels[ManagedByLabel] != ManagedByValue {
		return false
	}
	entry := c.entry(cur)
	if entry == nil || !meta.IsStatusConditionTrue(entry.Conditions, ImportConditionAccepted) {
		return false
	}
	return slices.Equal(clusterNames(entry.ExportingClusters), imp.ExportingClusters)
}

func (c *Controller) entry(obj *apixv1alpha1.InferencePoolImport) *apixv1alpha1.ImportController {
	for i := range obj.Status.Controllers {
		if string(obj.Status.Controllers[i].Name) == c.opts.ControllerName {
			return &obj.Status.Controllers[i]
		}
	}
	return nil
}

// applyImport creates or updates the import with server-side apply: the object (labels), then
// Spillway's status.controllers[] entry. Other controllers' entries are theirs: the list is a map
// keyed by name, so applying our entry never touches them.
func (c *Controller) applyImport(ctx context.Context, cur *apixv1alpha1.InferencePoolImport, imp fleet.Import) (fleet.PoolImportStatus, error) {
	st := fleet.PoolImportStatus{Pool: imp.Pool}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	client := c.gie.XInferenceV1alpha1().InferencePoolImports(imp.Pool.Namespace)
	obj := apixac.InferencePoolImport(imp.Pool.Name, imp.Pool.Namespace).
		WithLabels(map[string]string{ManagedByLabel: ManagedByValue})
	_, err := client.Apply(ctx, obj, opts)
	if isNamespaceNotFound(err) && c.opts.CreateNamespaces {
		err = c.createNamespace(ctx, imp.Pool.Namespace)
		if err == nil {
			_, err = client.Apply(ctx, obj, opts)
		}
	}
	if err != nil {
		return c.importFailed(st, err)
	}

	cond := metav1.Condition{
		Type:    ImportConditionAccepted,
		Status:  metav1.ConditionTrue,
		Reason:  ReasonImported,
		Message: fmt.Sprintf("exported by %d cluster(s) of the ClusterSet", len(imp.ExportingClusters)),
	}
	var conds []metav1.Condition
	if cur != nil {
		if e := c.entry(cur); e != nil {
			conds = slices.Clone(e.Conditions)
		}
	}
	meta.SetStatusCondition(&conds, cond) // keeps lastTransitionTime when the status is unchanged
	got := meta.FindStatusCondition(conds, ImportConditionAccepted)
	entry := apixac.ImportController().
		WithName(apixv1alpha1.ControllerName(c.opts.ControllerName)).
		WithConditions(metav1ac.Condition().
			WithType(got.Type).WithStatus(got.Status).WithReason(got.Reason).WithMessage(got.Message).
			WithLastTransitionTime(got.LastTransitionTime))
	for _, id := range imp.ExportingClusters {
		entry.WithExportingClusters(apixac.ExportingCluster().WithName(apixv1alpha1.ClusterName(id)))
	}
	status := apixac.InferencePoolImport(imp.Pool.Name, imp.Pool.Namespace).
		WithStatus(apixac.InferencePoolImportStatus().WithControllers(entry))
	if _, err := client.ApplyStatus(ctx, status, opts); err != nil {
		return c.importFailed(st, err)
	}
	c.log.Info("import applied", "pool", imp.Pool.String(), "exportingClusters", imp.ExportingClusters)
	st.Imported = true
	return st, nil
}

// importFailed turns a write error into the status reported to the hub. A missing namespace or
// missing permission is a standing condition, reported and not retried in a hurry; anything
// else is returned for a retry.
func (c *Controller) importFailed(st fleet.PoolImportStatus, err error) (fleet.PoolImportStatus, error) {
	switch {
	case isNamespaceNotFound(err):
		st.Reason = ReasonNamespaceNotFound
		st.Message = fmt.Sprintf("namespace %s does not exist and --create-namespaces is off", st.Pool.Namespace)
		c.log.Warn("import not created", "pool", st.Pool.String(), "reason", st.Reason)
		return st, nil
	case apierrors.IsForbidden(err):
		st.Reason, st.Message = ReasonForbidden, truncate(err.Error(), 1024)
		c.log.Warn("import not created", "pool", st.Pool.String(), "reason", st.Reason, "err", err)
		return st, nil
	}
	st.Reason, st.Message = ReasonApplyFailed, truncate(err.Error(), 1024)
	return st, fmt.Errorf("apply import %s: %w", st.Pool, err)
}

// withdrawImport removes Spillway's part of an import whose pool is no longer exported: the
// whole object when no other controller has an entry in it, else Spillway's entry alone.
func (c *Controller) withdrawImport(ctx context.Context, obj *apixv1alpha1.InferencePoolImport) error {
	client := c.gie.XInferenceV1alpha1().InferencePoolImports(obj.Namespace)
	others := slices.ContainsFunc(obj.Status.Controllers, func(e apixv1alpha1.ImportController) bool {
		return string(e.Name) != c.opts.ControllerName
	})
	if others {
		// Applying a status without our entry makes the server drop the fields we owned.
		empty := apixac.InferencePoolImport(obj.Name, obj.Namespace).WithStatus(apixac.InferencePoolImportStatus())
		if _, err := client.ApplyStatus(ctx, empty, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("withdraw import entry %s/%s: %w", obj.Namespace, obj.Name, err)
		}
		return nil
	}
	uid := obj.UID
	err := client.Delete(ctx, obj.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete import %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	c.log.Info("import deleted", "pool", obj.Namespace+"/"+obj.Name)
	return nil
}

func (c *Controller) createNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ManagedByLabel: ManagedByValue}}}
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	c.log.Info("namespace created for an import", "namespace", name)
	return nil
}

// isNamespaceNotFound reports whether err says the request's namespace does not exist.
func isNamespaceNotFound(err error) bool {
	var se apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d != nil && d.Kind == "namespaces"
}

func clusterNames(cs []apixv1alpha1.ExportingCluster) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, string(c.Name))
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

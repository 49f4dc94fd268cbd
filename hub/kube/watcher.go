package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/spillway-io/spillway/pkg/budget"
)

// ErrNotListed marks TokenBudgets the hub could not list at start: the CRD is missing, the
// hub may not read them, or the API server did not answer in time.
var ErrNotListed = errors.New("the hub cannot list TokenBudgets")

// Defaults of Options.
const (
	DefaultSyncTimeout   = 30 * time.Second
	DefaultRetryInterval = 5 * time.Second
)

// FieldManager names the hub's writes (the objects' status).
const FieldManager = "spillway-hub"

// Allocator receives the budgets: the hub's *budget.Allocator.
type Allocator interface {
	// SetBudgets replaces the declarations and reports whether they changed.
	SetBudgets(budget.Set) bool
}

// Options configure a Watcher.
type Options struct {
	// Client reaches the hub's cluster.
	Client dynamic.Interface
	// Namespace holds the TokenBudgets; objects of other namespaces are not read.
	Namespace string
	// TenantHeader is the sets' tenant header (--tenant-header), already checked.
	TenantHeader string
	// Allocator receives every set.
	Allocator Allocator
	// SyncTimeout bounds Start's first list, and its wait for the informer's; zero means
	// DefaultSyncTimeout.
	SyncTimeout time.Duration
	// RetryInterval is how long Lead waits before it tries again a status it could not write
	// (a change of any object tries at once); zero means DefaultRetryInterval.
	RetryInterval time.Duration
	// Logger receives the refusals and the changes of the set; nil discards them.
	Logger *slog.Logger
}

// Watcher follows the TokenBudgets of a namespace (see the package comment).
type Watcher struct {
	opts    Options
	log     *slog.Logger
	factory dynamicinformer.DynamicSharedInformerFactory
	lister  cache.GenericNamespaceLister
	stop    context.CancelFunc

	mu      sync.Mutex
	changed chan struct{} // closed, and replaced, at each change of an object

	// refused is what Run last logged of each refused object: a refusal is logged once.
	refused map[string]string
}

// Start lists the namespace's TokenBudgets, starts the informer that follows them, waits until
// it has listed them (at most SyncTimeout) and gives the allocator the first set. The informer
// runs until Close, or until ctx ends.
func Start(ctx context.Context, opts Options) (*Watcher, error) {
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// One list first: the informer would retry a missing CRD or permission in the background,
	// and the hub would only time out without saying why.
	lctx, cancel := context.WithTimeout(ctx, opts.SyncTimeout)
	_, err := opts.Client.Resource(TokenBudgetResource).Namespace(opts.Namespace).List(lctx, metav1.ListOptions{Limit: 1})
	cancel()
	if err != nil {
		return nil, listError(opts.Namespace, err)
	}

	w := &Watcher{
		opts:    opts,
		log:     opts.Logger,
		factory: dynamicinformer.NewFilteredDynamicSharedInformerFactory(opts.Client, 0, opts.Namespace, nil),
		changed: make(chan struct{}),
		refused: map[string]string{},
	}
	inf := w.factory.ForResource(TokenBudgetResource)
	informer := inf.Informer()
	if err := informer.SetWatchErrorHandler(w.watchError); err != nil {
		return nil, err
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.notify() },
		UpdateFunc: func(any, any) { w.notify() },
		DeleteFunc: func(any) { w.notify() },
	}); err != nil {
		return nil, err
	}
	w.lister = inf.Lister().ByNamespace(opts.Namespace)
	runCtx, stop := context.WithCancel(ctx)
	w.stop = stop
	w.factory.Start(runCtx.Done())
	sctx, cancel := context.WithTimeout(runCtx, opts.SyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), informer.HasSynced) {
		w.Close()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w in namespace %s: the informer has not listed them within %s", ErrNotListed, opts.Namespace, opts.SyncTimeout)
	}
	w.apply()
	return w, nil
}

// listError says what to do about a failed list.
func listError(ns string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w in namespace %s: the TokenBudget CRD is not installed in the hub's cluster "+
			"(kubectl apply --server-side -f deploy/crds/spillway/spillway.io_tokenbudgets.yaml): %w", ErrNotListed, ns, err)
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w in namespace %s: the hub's service account may not list them "+
			"(the token-budgets component of deploy/hub, or the chart's tokenBudgets.enabled, grants it): %w", ErrNotListed, ns, err)
	}
	return fmt.Errorf("%w in namespace %s: %w", ErrNotListed, ns, err)
}

// Close stops the informer and waits for its goroutines.
func (w *Watcher) Close() {
	w.stop()
	w.factory.Shutdown()
}

// Run gives the allocator the set again at every change of a TokenBudget, until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	for {
		ch := w.changes()
		w.apply()
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

// Lead writes each TokenBudget's Accepted condition, and again at every change, until ctx
// ends: the leader replica's work. A write that fails is tried again after RetryInterval.
func (w *Watcher) Lead(ctx context.Context) error {
	retry := time.NewTimer(w.opts.RetryInterval)
	retry.Stop()
	defer retry.Stop()
	for {
		ch := w.changes()
		if err := w.writeStatuses(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("TokenBudget status not written; trying again", "namespace", w.opts.Namespace, "retryIn", w.opts.RetryInterval, "err", err)
			retry.Reset(w.opts.RetryInterval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-retry.C:
		}
	}
}

// notify wakes Run and Lead.
func (w *Watcher) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
}

// changes returns a channel closed at the next change.
func (w *Watcher) changes() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// list returns the informer's objects: shared with its cache, never to be modified.
func (w *Watcher) list() []*unstructured.Unstructured {
	objs, _ := w.lister.List(labels.Everything()) // a cache's lister fails never
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

// apply gives the allocator the objects' set, and logs each new refusal.
func (w *Watcher) apply() {
	set, refused := Budgets(w.list(), w.opts.TenantHeader)
	logged := make(map[string]string, len(refused))
	for name, err := range refused {
		msg := err.Error()
		if w.refused[name] != msg {
			w.log.Error("TokenBudget refused; the other budgets are used", "namespace", w.opts.Namespace, "name", name, "err", err)
		}
		logged[name] = msg
	}
	w.refused = logged
	if w.opts.Allocator.SetBudgets(set) {
		w.log.Info("budgets declared", "namespace", w.opts.Namespace, "budgets", len(set.Budgets), "refused", len(refused))
	}
}

// writeStatuses writes the Accepted condition of every object whose condition differs.
func (w *Watcher) writeStatuses(ctx context.Context) error {
	objs := w.list()
	_, refused := Budgets(objs, w.opts.TenantHeader)
	var errs []error
	for _, o := range objs {
		if err := w.writeStatus(ctx, o, accepted(o, refused[o.GetName()])); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeStatus sets cond among the object's conditions, when it changes them.
func (w *Watcher) writeStatus(ctx context.Context, o *unstructured.Unstructured, cond metav1.Condition) error {
	var conds []metav1.Condition
	if raw, ok, _ := unstructured.NestedSlice(o.Object, "status", "conditions"); ok {
		if b, err := json.Marshal(raw); err == nil {
			_ = json.Unmarshal(b, &conds) // conditions the hub cannot read are replaced
		}
	}
	before := slices.Clone(conds)
	meta.SetStatusCondition(&conds, cond)
	if slices.EqualFunc(before, conds, func(a, b metav1.Condition) bool {
		return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
	}) {
		return nil
	}
	b, err := json.Marshal(conds)
	if err != nil {
		return err
	}
	var raw []any
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	obj := o.DeepCopy()
	if err := unstructured.SetNestedSlice(obj.Object, raw, "status", "conditions"); err != nil {
		return err
	}
	_, err = w.opts.Client.Resource(TokenBudgetResource).Namespace(o.GetNamespace()).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or changed since: the informer brings the change, and another pass
	}
	if err != nil {
		return fmt.Errorf("update status of TokenBudget %s/%s: %w", o.GetNamespace(), o.GetName(), err)
	}
	return nil
}

// watchError logs a broken watch in the hub's words; the informer lists again with backoff.
func (w *Watcher) watchError(_ *cache.Reflector, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return // a watch's normal end
	}
	w.log.Warn("TokenBudget watch failed; the budgets stay as they were until the objects are listed again", "namespace", w.opts.Namespace, "err", err)
}

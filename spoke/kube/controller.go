// Package kube is the spoke's Kubernetes side. One Controller watches the cluster with client-go
// informers and keeps, level-triggered, everything the spoke owns there:
//
//   - the local pools: InferencePools (inference.networking.k8s.io/v1) and the ready Pods they
//     select become the spoke's source.Pools (endpoints per target port, engine per Pod label);
//   - the InferenceObjective priorities of each pool, for the EPP (either API group);
//   - one InferencePoolImport per pool exported anywhere in the ClusterSet, from the hub's view;
//   - the Exported condition on the cluster's exported pools (False with NotAllowedByHub for a
//     pool the hub's export policy refuses, which the hub client leaves out);
//   - a ServiceExport of the cluster's inference gateway Service, for MCS-API implementations.
//
// Every change of any watched object, or of the fleet view, triggers one reconcile of the whole
// state; a failed write is retried with backoff. While the API server is away the informers keep
// their last state, so the spoke keeps routing on it and reconciles when the API returns.
//
// Replicas (Options.LeaderElection): several spoke replicas of a cluster all watch the cluster
// and route on what they read (Run: the pools, the objectives, the SpillPolicy in force), and one
// writes: the replica holding the Lease (Elector) runs Lead, which does every write above
// (imports, namespaces, Exported conditions, ServiceExport, SpillPolicy status, warning events)
// with a context that ends the moment the lease is lost, so a replica that is no longer leader
// stops writing at once. Without LeaderElection, Run does both.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	gieclient "sigs.k8s.io/gateway-api-inference-extension/client-go/clientset/versioned"
	gieinformers "sigs.k8s.io/gateway-api-inference-extension/client-go/informers/externalversions"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/pkg/spill"
	"github.com/spillway-io/spillway/spoke/source"
)

// DefaultControllerName is the name Spillway writes into status.controllers[] of imports and
// status.parents[].controllerName of exported pools.
const DefaultControllerName = "spillway.io/spoke"

// Labels on the objects the spoke creates.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "spillway"
)

// FleetView is the part of the hub client's fleet view the controller reads.
type FleetView interface {
	Imports() []fleet.Import
	Clusters() []fleet.Cluster
	Changed() <-chan struct{}
}

// RefusedExports says which of the cluster's exports the hub client leaves out because the
// hub's export policy refuses them (a *hubclient.Client).
type RefusedExports interface {
	RefusedExports() map[fleet.PoolRef]fleet.ExportRefusal
	RefusedChanged() <-chan struct{}
}

// ImportReporter takes what the spoke holds of its InferencePoolImports, for the hub.
type ImportReporter interface {
	SetImportStatus(states []fleet.PoolImportStatus)
}

// Options configure a Controller.
type Options struct {
	Config *rest.Config
	// ClusterID is this cluster's ID in the ClusterSet.
	ClusterID string
	// ControllerName identifies Spillway in status; DefaultControllerName when empty.
	ControllerName string
	// CreateNamespaces lets the spoke create a missing namespace for an import. When false an
	// import into a missing namespace is reported (NamespaceNotFound) and not created.
	CreateNamespaces bool
	// DefaultEngine is the engine of a Pod without the engine-type label; vLLM when empty.
	DefaultEngine modelmetrics.Engine
	// GatewayService, when set, is the inference gateway Service exported with a ServiceExport.
	GatewayService types.NamespacedName
	// View and Reporter connect the controller to the hub; both nil in a standalone spoke.
	View     FleetView
	Reporter ImportReporter
	// Refused, when set, names the exported pools the hub client leaves out: their Exported
	// condition is False with ReasonNotAllowedByHub and the hub's rule.
	Refused RefusedExports
	// Spillers, when set, return the spill decisions of the pools the spoke's EPPs serve: the
	// controller gives each its pool's SpillPolicy (DefaultSpillPolicy without one) and reports
	// its state in the policy's status.
	Spillers           func() map[fleet.PoolRef]Spiller
	DefaultSpillPolicy spill.Policy
	// Resync bounds how long the controller goes without a full reconcile.
	Resync time.Duration
	// WithdrawDelay is how long an import the fleet view no longer lists is kept before the
	// spoke withdraws it: a gap in the view shorter than this deletes nothing (a hub storing a
	// cluster's export set again when that cluster's session moves between its spoke replicas,
	// or restarts). Zero means DefaultWithdrawDelay; negative, none.
	WithdrawDelay time.Duration
	// LeaderElection separates the writes from the reads: Run only reads (the pools, the
	// objectives and the SpillPolicy in force, for this replica's EPP and spill decision), and the
	// writes run in Lead, which the spoke calls while it holds the cluster's Lease. When false,
	// Run does both.
	LeaderElection bool
	Logger         *slog.Logger
}

// Controller keeps the cluster's Spillway state. It implements source.Source.
type Controller struct {
	opts    Options
	log     *slog.Logger
	kube    kubernetes.Interface
	gie     gieclient.Interface
	mcs     mcsclient.Interface
	dyn     dynamic.Interface
	disco   discovery.DiscoveryInterface
	kubeInf informers.SharedInformerFactory
	// sliceInf watches only EndpointSlices that an MCS-API implementation imported.
	sliceInf informers.SharedInformerFactory
	gieInf   gieinformers.SharedInformerFactory
	dynInf   dynamicinformer.DynamicSharedInformerFactory
	events   record.EventRecorder
	bcast    record.EventBroadcaster
	// objectiveGVRs are the InferenceObjective resources this cluster serves.
	objectiveGVRs []schema.GroupVersionResource
	// hasSpillPolicies is true when the cluster serves Spillway's SpillPolicy CRD; set by Run,
	// read by SpillPolicy from the spoke's other goroutines too.
	hasSpillPolicies atomic.Bool
	// kick wakes the read loop (Run), writeKick the write loop (Lead or Run's own).
	kick      chan struct{}
	writeKick chan struct{}
	// cachesSynced is closed once Run's caches have synced and the discovery results are set:
	// Lead writes nothing before.
	cachesSynced chan struct{}
	// leading is true while the write loop runs: only then are warnings recorded as events.
	leading atomic.Bool
	// absentSince is when each import the spoke holds went missing from the fleet view; only
	// the write loop touches it.
	absentSince map[fleet.PoolRef]time.Time

	mu         sync.RWMutex
	pools      []source.Pool
	objectives map[fleet.PoolRef]map[string]int
	changed    chan struct{}
	synced     bool
	// exportCheckedAt is when the gateway's ServiceExport was last checked.
	exportCheckedAt time.Time
	// warned remembers the warnings already recorded as events.
	warned map[string]bool
}

// New returns a controller; Run starts it.
func New(opts Options) (*Controller, error) {
	if opts.Config == nil {
		return nil, errors.New("kube: a REST config is required")
	}
	if opts.ClusterID == "" {
		return nil, errors.New("kube: the cluster ID is required")
	}
	if opts.ControllerName == "" {
		opts.ControllerName = DefaultControllerName
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.WithdrawDelay == 0 {
		opts.WithdrawDelay = DefaultWithdrawDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := rest.CopyConfig(opts.Config)
	cfg.UserAgent = "spillway-spoke"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	gie, err := gieclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("inference client: %w", err)
	}
	mcs, err := mcsclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("mcs client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	c := &Controller{
		opts:    opts,
		log:     opts.Logger.With("component", "kube"),
		kube:    kube,
		gie:     gie,
		mcs:     mcs,
		dyn:     dyn,
		disco:   kube.Discovery(),
		kubeInf: informers.NewSharedInformerFactory(kube, 0),
		sliceInf: informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = mcsv1beta1.LabelSourceCluster
		})),
		gieInf:       gieinformers.NewSharedInformerFactory(gie, 0),
		dynInf:       dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		kick:         make(chan struct{}, 1),
		writeKick:    make(chan struct{}, 1),
		cachesSynced: make(chan struct{}),
		objectives:   map[fleet.PoolRef]map[string]int{},
		absentSince:  map[fleet.PoolRef]time.Time{},
		changed:      make(chan struct{}),
	}
	c.bcast = record.NewBroadcaster()
	c.events = c.bcast.NewRecorder(scheme(), corev1.EventSource{Component: "spillway-spoke"})
	return c, nil
}

// Run watches the cluster and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer c.bcast.Shutdown()

	gvrs, err := c.discoverObjectives(ctx)
	if err != nil {
		return err
	}
	c.objectiveGVRs = gvrs
	if c.opts.Spillers != nil {
		res, err := c.disco.ServerResourcesForGroupVersion(SpillPolicyResource.GroupVersion().String())
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("discover %s: %w", SpillPolicyResource.GroupVersion(), err)
		}
		c.hasSpillPolicies.Store(res != nil && slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == SpillPolicyResource.Resource }))
		if !c.hasSpillPolicies.Load() {
			c.log.Warn("no SpillPolicy resource in this cluster: the EPP configuration's spill policy applies")
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.trigger() },
		UpdateFunc: func(any, any) { c.trigger() },
		DeleteFunc: func(any) { c.trigger() },
	}
	watched := []cache.SharedIndexInformer{
		c.gieInf.Inference().V1().InferencePools().Informer(),
		c.gieInf.XInference().V1alpha1().InferencePoolImports().Informer(),
		c.kubeInf.Core().V1().Pods().Informer(),
	}
	if c.opts.GatewayService.Name != "" {
		watched = append(watched, c.sliceInf.Discovery().V1().EndpointSlices().Informer())
	}
	for _, inf := range watched {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	if c.hasSpillPolicies.Load() {
		gvrs = append(slices.Clone(gvrs), SpillPolicyResource)
	}
	for _, gvr := range gvrs {
		if _, err := c.dynInf.ForResource(gvr).Informer().AddEventHandler(handler); err != nil {
			return err
		}
	}
	c.kubeInf.Start(ctx.Done())
	c.sliceInf.Start(ctx.Done())
	c.gieInf.Start(ctx.Done())
	c.dynInf.Start(ctx.Done())
	defer func() {
		c.kubeInf.Shutdown()
		c.sliceInf.Shutdown()
		c.gieInf.Shutdown()
		c.dynInf.Shutdown()
	}()
	for _, ok := range []map[string]bool{
		typeNames(c.kubeInf.WaitForCacheSync(ctx.Done())),
		typeNames(c.sliceInf.WaitForCacheSync(ctx.Done())),
		typeNames(c.gieInf.WaitForCacheSync(ctx.Done())),
		gvrNames(c.dynInf.WaitForCacheSync(ctx.Done())),
	} {
		for name, synced := range ok {
			if !synced {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("kube: %s cache did not sync", name)
			}
		}
	}
	c.log.Info("kubernetes caches synced", "objectiveResources", len(gvrs))
	close(c.cachesSynced)
	if c.opts.LeaderElection {
		return c.read(ctx)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Lead(ctx) }()
	err = c.read(ctx)
	if lerr := <-errc; err == nil {
		err = lerr
	}
	return err
}

// read is the read loop: on every change of a watched object, and every resync period, it
// publishes the pools and objectives and applies the SpillPolicy in force to the spill decision,
// then wakes the write loop.
func (c *Controller) read(ctx context.Context) error {
	resync := time.NewTicker(c.opts.Resync)
	defer resync.Stop()
	for {
		pools, objectives := c.buildPools()
		c.publish(pools, objectives)
		if err := c.applySpillPolicy(); err != nil {
			c.log.Warn("spill policy not applied", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-resync.C:
		}
		// Let a burst of events settle into one pass.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Lead does the controller's writes until ctx ends: the imports of the fleet view, the Exported
// conditions, the gateway's ServiceExport, the SpillPolicy status and warning events. With
// LeaderElection the spoke calls it while it holds the Lease, with a context that ends when the
// lease is lost; Run must be running. It waits for Run's caches first.
func (c *Controller) Lead(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-c.cachesSynced:
	}
	c.leading.Store(true)
	defer c.leading.Store(false)
	c.mu.Lock()
	c.warned = nil // warnings seen while another replica led are recorded again
	c.mu.Unlock()
	c.trigger()

	var viewChanged, refusedChanged <-chan struct{}
	if c.opts.View != nil {
		viewChanged = c.opts.View.Changed()
	}
	if c.opts.Refused != nil {
		refusedChanged = c.opts.Refused.RefusedChanged()
	}
	resync := time.NewTicker(c.opts.Resync)
	defer resync.Stop()
	// The spill state changes with load, not with objects: its status is refreshed every second.
	spillTick := time.NewTicker(time.Second)
	defer spillTick.Stop()
	retry := newRetryBackoff()
	var retryC <-chan time.Time
	for {
		if err := c.reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := retry.NextBackOff()
			if onlyWaiting(err) {
				c.log.Debug("reconcile waiting, retrying", "after", d, "err", err)
			} else {
				c.log.Warn("reconcile failed, retrying", "after", d, "err", err)
			}
			retryC = time.After(d)
		} else {
			retry.Reset()
			retryC = nil
		}
	wait: // for a reason to reconcile again; the spill tick only refreshes the policy's status
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-c.writeKick:
				break wait
			case <-viewChanged:
				viewChanged = c.opts.View.Changed()
				break wait
			case <-refusedChanged:
				refusedChanged = c.opts.Refused.RefusedChanged()
				break wait
			case <-resync.C:
				break wait
			case <-retryC:
				break wait
			case <-spillTick.C:
				if err := c.syncSpillPolicy(ctx); err != nil && ctx.Err() == nil {
					c.log.Warn("spill policy status not written", "err", err)
				}
			}
		}
		// Let a burst of events settle into one reconcile.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// onlyWaiting reports whether every error joined in err is errWaiting.
func onlyWaiting(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyWaiting(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, errWaiting)
}

// trigger wakes the read and the write loops.
func (c *Controller) trigger() {
	for _, ch := range []chan struct{}{c.kick, c.writeKick} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// reconcile brings everything the spoke writes up to date with the caches and the fleet view.
func (c *Controller) reconcile(ctx context.Context) error {
	var errs []error
	var imports []fleet.Import
	if c.opts.View != nil {
		imports = c.opts.View.Imports()
		states, err := c.syncImports(ctx, imports)
		errs = append(errs, err)
		if c.opts.Reporter != nil {
			c.opts.Reporter.SetImportStatus(states)
		}
	}
	errs = append(errs, c.syncExportStatus(ctx, imports))
	if c.opts.GatewayService.Name != "" {
		errs = append(errs, c.ensureServiceExport(ctx))
	}
	errs = append(errs, c.syncSpillPolicy(ctx))
	return errors.Join(errs...)
}

// publish stores the pools and objectives and wakes Changed's waiters when the pools changed.
func (c *Controller) publish(pools []source.Pool, objectives map[fleet.PoolRef]map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.objectives = objectives
	if c.synced && slices.EqualFunc(pools, c.pools, poolEqual) {
		return
	}
	c.pools, c.synced = pools, true
	close(c.changed)
	c.changed = make(chan struct{})
}

// Pools implements source.Source.
func (c *Controller) Pools() []source.Pool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.pools)
}

// Changed implements source.Source.
func (c *Controller) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// ErrNotSynced is Ready's answer until the caches have synced and the pools are known.
var ErrNotSynced = errors.New("kubernetes caches not synced yet")

// Ready reports whether the controller knows the cluster's pools: serving before would route on
// an empty pool.
func (c *Controller) Ready() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return ErrNotSynced
	}
	return nil
}

// Priority returns the priority of the InferenceObjective name bound to pool.
func (c *Controller) Priority(pool fleet.PoolRef, name string) (int, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	p, ok := c.objectives[pool][name]
	return p, ok
}

func poolEqual(a, b source.Pool) bool {
	return a.Ref == b.Ref && a.Export == b.Export && a.EndpointPicker == b.EndpointPicker && a.EndpointPickerPort == b.EndpointPickerPort && slices.Equal(a.TargetPorts, b.TargetPorts) &&
		maps.Equal(a.Labels, b.Labels) && slices.EqualFunc(a.Endpoints, b.Endpoints, func(x, y source.Endpoint) bool {
		return x.Address == y.Address && x.Engine == y.Engine && slices.Equal(x.Models, y.Models) && x.Pod == y.Pod
	})
}

func typeNames[K comparable](m map[K]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[fmt.Sprint(k)] = v
	}
	return out
}

func gvrNames(m map[schema.GroupVersionResource]bool) map[string]bool { return typeNames(m) }

// newRetryBackoff is the wait between failed reconciles: 250 ms doubling to 30 s, reset by a
// reconcile that succeeds. The controller reconciles the whole state on one trigger channel, not
// keys from a workqueue, so it takes cenkalti/backoff's exponential policy (as the hub client
// does) rather than a workqueue rate limiter.
func newRetryBackoff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval: 250 * time.Millisecond,
		Multiplier:      2,
		MaxInterval:     30 * time.Second,
	}
}

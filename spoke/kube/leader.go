package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Leader election defaults, kube-controller-manager's: a replica that dies without releasing the
// Lease is replaced at most LeaseDuration (plus a RetryPeriod) later; a leader that cannot renew
// for RenewDeadline stops leading, before any other replica may take over.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	// DefaultLeaseNamespace is where the Lease lives when neither a flag nor $POD_NAMESPACE
	// says.
	DefaultLeaseNamespace = "spillway-system"
)

// LeaseName is the name of the Lease the spoke replicas of a cluster elect their leader with.
func LeaseName(clusterID string) string { return "spillway-spoke-" + clusterID }

// ElectorOptions configure an Elector.
type ElectorOptions struct {
	Config *rest.Config
	// Namespace and Name of the coordination.k8s.io Lease.
	Namespace, Name string
	// Identity names this replica in the Lease's holderIdentity; it must differ between replicas.
	// Empty: the host name (the Pod's name) with a random suffix, so that a restarted Pod never
	// takes its predecessor's place without the lease having expired or been released.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's (zero: the defaults above);
	// LeaseDuration > RenewDeadline > 1.2 × RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Logger                                    *slog.Logger
}

// Elector runs the election of the cluster's spoke replicas on a Kubernetes Lease, with
// client-go's leaderelection: the replica that holds the Lease leads, renews it every
// RetryPeriod, and stops leading when it could not renew for RenewDeadline; the others try to
// take it every RetryPeriod once LeaseDuration passed without a renewal. A leader that stops
// (its context ends) releases the Lease, so another takes over within a RetryPeriod.
type Elector struct {
	opts ElectorOptions
	lock resourcelock.Interface
	log  *slog.Logger
}

// NewElector returns an elector; Run takes part in the election.
func NewElector(o ElectorOptions) (*Elector, error) {
	if o.Config == nil {
		return nil, errors.New("kube: a REST config is required for leader election")
	}
	if o.Namespace == "" || o.Name == "" {
		return nil, errors.New("kube: leader election needs the Lease's namespace and name")
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewDeadline <= 0 {
		o.RenewDeadline = DefaultRenewDeadline
	}
	if o.RetryPeriod <= 0 {
		o.RetryPeriod = DefaultRetryPeriod
	}
	if err := ValidateElection(o.LeaseDuration, o.RenewDeadline, o.RetryPeriod); err != nil {
		return nil, err
	}
	if o.Identity == "" {
		id, err := replicaIdentity()
		if err != nil {
			return nil, err
		}
		o.Identity = id
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := rest.CopyConfig(o.Config)
	cfg.UserAgent = "spillway-spoke-leader-election"
	// A renewal must not wait behind the controller's requests for the client's rate limit.
	cfg.RateLimiter, cfg.QPS, cfg.Burst = nil, 5, 10
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	log := o.Logger.With("component", "leader-election", "lease", o.Namespace+"/"+o.Name, "identity", o.Identity)
	return &Elector{
		opts: o,
		lock: &explainedLock{Interface: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name},
			Client:     cs.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
		}, namespace: o.Namespace, log: log},
		log: log,
	}, nil
}

// explainedLock is the Lease lock, which says once, in the spoke's words, why the Lease cannot be
// created: client-go retries every retry period and logs only the API error, and meanwhile no
// replica writes anything.
type explainedLock struct {
	resourcelock.Interface
	namespace string
	log       *slog.Logger
	told      atomic.Bool
}

func (l *explainedLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, ler)
	var why string
	switch {
	case isNamespaceNotFound(err):
		why = "the Lease's namespace does not exist: create it, or set --leader-elect-namespace (or $POD_NAMESPACE) to one that does"
	case apierrors.IsForbidden(err):
		why = "the spoke may not create Leases in this namespace: bind it the Role spillway-spoke-leader-election there (deploy/spoke/rbac.yaml)"
	}
	if why != "" && l.told.CompareAndSwap(false, true) {
		l.log.Error("no replica can lead, so none writes imports, status or exports", "namespace", l.namespace, "why", why, "err", err)
	}
	return err
}

// ValidateElection checks the election's durations as client-go does, with the flags' names.
func ValidateElection(lease, renew, retry time.Duration) error {
	switch {
	case lease <= 0 || renew <= 0 || retry <= 0:
		return fmt.Errorf("--leader-elect-lease-duration %s, --leader-elect-renew-deadline %s and --leader-elect-retry-period %s must be positive", lease, renew, retry)
	case lease <= renew:
		return fmt.Errorf("--leader-elect-lease-duration %s must be longer than --leader-elect-renew-deadline %s: a leader must stop before another may take over", lease, renew)
	case renew <= time.Duration(leaderelection.JitterFactor*float64(retry)):
		return fmt.Errorf("--leader-elect-renew-deadline %s must be longer than 1.2 × --leader-elect-retry-period %s", renew, retry)
	}
	return nil
}

// Identity is this replica's name in the Lease.
func (e *Elector) Identity() string { return e.opts.Identity }

// Run takes part in the election until ctx ends. Each time this replica acquires the Lease, lead
// runs with a context that ends the moment the lease is lost (or ctx ends); Run waits for lead to
// return, releases the Lease if it still holds it, and stands again. An error from lead ends Run
// with it.
func (e *Elector) Run(ctx context.Context, lead func(context.Context) error) error {
	for ctx.Err() == nil {
		if err := e.term(ctx, lead); err != nil {
			return err
		}
	}
	return nil
}

// term runs one candidacy: it waits to acquire the Lease, then leads until the lease is lost.
func (e *Elector) term(ctx context.Context, lead func(context.Context) error) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// client-go calls OnStartedLeading on a goroutine of its own; it only hands the leader's
	// context over, and lead runs on this one, which waits for it.
	started := make(chan context.Context, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            e.lock,
		Name:            e.opts.Name,
		LeaseDuration:   e.opts.LeaseDuration,
		RenewDeadline:   e.opts.RenewDeadline,
		RetryPeriod:     e.opts.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) { started <- lctx },
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				if id != e.opts.Identity {
					e.log.Info("another replica leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		le.Run(runCtx)
	}()
	select {
	case <-done:
		return nil // ctx ended before this replica led
	case lctx := <-started:
		e.log.Info("leading: this replica holds the lease")
		err := lead(lctx)
		if ctx.Err() == nil {
			if lctx.Err() != nil {
				e.log.Warn("lost the lease: this replica stopped leading")
			} else {
				e.log.Warn("stopped leading", "err", err)
			}
		}
		cancel() // releases the Lease when still held
		<-done
		return err
	}
}

// replicaIdentity is the host name (a Pod's name) with a random suffix.
func replicaIdentity() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "spoke"
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return host + "_" + hex.EncodeToString(b), nil
}

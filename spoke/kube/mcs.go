package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Where a remote cluster's gateway address came from.
const (
	GatewayFromMCS = "mcs"
	GatewayFromHub = "hub"
)

// ensureServiceExport keeps a ServiceExport of the cluster's inference gateway Service, so an
// MCS-API implementation (Submariner, Cilium, GKE) publishes it to the other clusters. It checks
// at most once per resync period; clusters without the MCS-API CRDs are told once in the log.
func (c *Controller) ensureServiceExport(ctx context.Context) error {
	c.mu.Lock()
	due := time.Since(c.exportCheckedAt) >= c.opts.Resync
	if due {
		c.exportCheckedAt = time.Now()
	}
	c.mu.Unlock()
	if !due {
		return nil
	}
	svc := c.opts.GatewayService
	client := c.mcs.MulticlusterV1beta1().ServiceExports(svc.Namespace)
	_, err := client.Get(ctx, svc.Name, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return c.serviceExportFailed(err)
	}
	se := &mcsv1beta1.ServiceExport{ObjectMeta: metav1.ObjectMeta{
		Name: svc.Name, Namespace: svc.Namespace, Labels: map[string]string{ManagedByLabel: ManagedByValue},
	}}
	if _, err := client.Create(ctx, se, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return c.serviceExportFailed(err)
	}
	c.log.Info("gateway service exported", "service", svc.String())
	return nil
}

func (c *Controller) serviceExportFailed(err error) error {
	if meta.IsNoMatchError(err) || isResourceMissing(err) {
		c.log.Warn("no MCS-API ServiceExport resource in this cluster: the gateway is reached at its registered address", "service", c.opts.GatewayService.String())
		return nil
	}
	c.mu.Lock()
	c.exportCheckedAt = time.Time{} // retry with the next reconcile
	c.mu.Unlock()
	return fmt.Errorf("export gateway service %s: %w", c.opts.GatewayService, err)
}

// isResourceMissing reports a 404 for the resource itself (its CRD is not installed), as opposed
// to a missing object.
func isResourceMissing(err error) bool {
	var se apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d == nil || d.Name == ""
}

// RemoteGateway returns the address of a remote cluster's inference gateway for Parent Mode.
// With an MCS-API implementation it is a ready endpoint of the EndpointSlices the implementation
// imported for the gateway Service from that cluster (labels multicluster.kubernetes.io/
// service-name and source-cluster); otherwise the address the remote spoke registered with the
// hub. The gateway Service has the same namespace/name in every cluster (namespace sameness).
func (c *Controller) RemoteGateway(clusterID string) (addr, from string, ok bool) {
	if svc := c.opts.GatewayService; svc.Name != "" {
		sel := labels.SelectorFromSet(labels.Set{
			mcsv1beta1.LabelServiceName:   svc.Name,
			mcsv1beta1.LabelSourceCluster: clusterID,
		})
		found, err := c.sliceInf.Discovery().V1().EndpointSlices().Lister().EndpointSlices(svc.Namespace).List(sel)
		if err == nil {
			if a, ok := readyEndpoint(found); ok {
				return a, GatewayFromMCS, true
			}
		}
	}
	if c.opts.View != nil {
		for _, cl := range c.opts.View.Clusters() {
			if cl.Info.ID == clusterID && cl.Info.GatewayAddress != "" {
				return cl.Info.GatewayAddress, GatewayFromHub, true
			}
		}
	}
	return "", "", false
}

// readyEndpoint returns the first ready address:port of the slices, in a stable order.
func readyEndpoint(eps []*discoveryv1.EndpointSlice) (string, bool) {
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range eps {
		if len(s.Ports) == 0 || s.Ports[0].Port == nil {
			continue
		}
		port := strconv.Itoa(int(*s.Ports[0].Port))
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			if len(e.Addresses) > 0 {
				return net.JoinHostPort(e.Addresses[0], port), true
			}
		}
	}
	return "", false
}

package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/spillway-io/spillway/pkg/kubeconfig"
)

// ClusterProperty (KEP-2149) names and resource.
const (
	PropertyClusterID  = "cluster.clusterset.k8s.io"
	PropertyClusterSet = "clusterset.k8s.io"
)

// ClusterPropertyResource is KEP-2149's ClusterProperty; its Go module is not published, so the
// spoke reads it with the dynamic client.
var ClusterPropertyResource = schema.GroupVersionResource{Group: "about.k8s.io", Version: "v1alpha1", Resource: "clusterproperties"}

// Identity is the cluster's place in its ClusterSet.
type Identity struct {
	ClusterID  string
	ClusterSet string
}

// ReadIdentity reads the cluster's ID and ClusterSet from its ClusterProperty objects. A missing
// object, or a cluster without the ClusterProperty CRD, leaves the value empty.
func ReadIdentity(ctx context.Context, cfg *rest.Config) (Identity, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return Identity{}, err
	}
	var id Identity
	for name, dst := range map[string]*string{PropertyClusterID: &id.ClusterID, PropertyClusterSet: &id.ClusterSet} {
		obj, err := dyn.Resource(ClusterPropertyResource).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return Identity{}, fmt.Errorf("read ClusterProperty %s: %w", name, err)
		}
		*dst, _, _ = unstructured.NestedString(obj.Object, "spec", "value")
	}
	return id, nil
}

// RESTConfig loads the API server configuration: the kubeconfig at path, else $KUBECONFIG, else
// the in-cluster service account.
func RESTConfig(path string) (*rest.Config, error) { return kubeconfig.Load(path) }

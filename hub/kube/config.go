package kube

import (
	"k8s.io/client-go/rest"

	"github.com/spillway-io/spillway/pkg/kubeconfig"
)

// RESTConfig loads the configuration of the hub's cluster: the kubeconfig at path, else
// $KUBECONFIG, else the Pod's service account (in-cluster).
func RESTConfig(path string) (*rest.Config, error) {
	cfg, err := kubeconfig.Load(path)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = FieldManager
	return cfg, nil
}

// Package kube is lifeboat's window on Kubernetes: clients, ceph-csi's
// cluster configuration and credentials, and the CSI snapshot objects of RBD
// drivers. It does not talk to Ceph; kube/bridge wires the two together.
package kube

import (
	"fmt"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultTimeout bounds each API request, so an unreachable API server is
// an error rather than a hang.
const DefaultTimeout = 15 * time.Second

// Clients are the typed clients lifeboat uses.
type Clients struct {
	Config *rest.Config
	Kube   kubernetes.Interface
	Snap   snapclient.Interface
}

// RESTConfig loads a client configuration: the kubeconfig file when one is
// named, else $KUBECONFIG or ~/.kube/config, else the in-cluster service
// account.
func RESTConfig(kubeconfig string, timeout time.Duration) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	}
	if kubeconfig != "" || err != nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = kubeconfig
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration (use --kubeconfig or run in a pod): %w", err)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cfg.Timeout = timeout
	cfg.UserAgent = "lifeboat"
	return cfg, nil
}

// NewClients builds the clients from a REST configuration.
func NewClients(cfg *rest.Config) (*Clients, error) {
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s, err := snapclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Config: cfg, Kube: k, Snap: s}, nil
}

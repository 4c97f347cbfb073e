package main

import (
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weirmetrics/weir/collector"
)

// collectorWanted reports whether the file configures anything to scrape:
// static targets, or a discovery mode that finds them.
func collectorWanted(c collector.Config) bool {
	return len(c.Targets) > 0 || (c.Discovery.Mode != "" && c.Discovery.Mode != collector.ModeStatic)
}

// collectorKube builds the Kubernetes client of node and central
// discovery: from $KUBECONFIG when set, else the in-cluster service
// account. It also returns the API server URL for central mode. Static
// mode needs neither.
func collectorKube(c collector.Config) (kubernetes.Interface, string, error) {
	if c.Discovery.Mode == "" || c.Discovery.Mode == collector.ModeStatic {
		return nil, "", nil
	}
	var (
		rc  *rest.Config
		err error
	)
	if path := os.Getenv("KUBECONFIG"); path != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, "", fmt.Errorf("collector.discovery.mode %s: Kubernetes client: %w", c.Discovery.Mode, err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, "", fmt.Errorf("collector.discovery.mode %s: Kubernetes client: %w", c.Discovery.Mode, err)
	}
	return kube, rc.Host, nil
}

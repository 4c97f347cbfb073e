// Package deploy holds only tests: they check the Kubernetes manifests of
// this directory (every object decodes strictly into its type, every
// overlay builds, references resolve, RBAC is least privilege) and run the
// NATS configurations with the real server (the three-server cluster, and an
// edge leaf server forwarding to a hub across a broken link).
package deploy

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// klog's flush daemon starts when client-go's scheme is imported.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

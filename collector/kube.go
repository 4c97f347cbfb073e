package collector

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// NodeClient is what discovery reads of the Kubernetes API: the kubelet
// port of one Node in node mode, the list and watch of every Node's
// metadata in central mode.
type NodeClient interface {
	// KubeletPort returns status.daemonEndpoints.kubeletEndpoint.Port of
	// the named Node, 0 when the Node has none.
	KubeletPort(ctx context.Context, name string) (int, error)
	List(ctx context.Context, opts metav1.ListOptions) (*metav1.PartialObjectMetadataList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NewNodeClient reads Nodes through config with client-go's REST and
// metadata clients. Neither links the types of k8s.io/api: decoding the
// one field node mode needs, and only the metadata of the Nodes central
// mode watches, keeps out of the agent on every node the megabytes of
// code and heap that the typed clients and their scheme cost.
func NewNodeClient(config *rest.Config) (NodeClient, error) {
	meta, err := metadata.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	c := rest.CopyConfig(config)
	c.APIPath, c.GroupVersion = "/api", &schema.GroupVersion{Version: "v1"}
	c.NegotiatedSerializer = serializer.NewCodecFactory(statusScheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return restNodes{ResourceInterface: meta.Resource(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}), rest: rc}, nil
}

// statusScheme decodes the Status of a failed request to the core API.
var statusScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}()

type restNodes struct {
	metadata.ResourceInterface
	rest *rest.RESTClient
}

// nodeEndpoint is the part of a Node that node mode reads.
type nodeEndpoint struct {
	Status struct {
		DaemonEndpoints struct {
			KubeletEndpoint struct {
				Port int `json:"Port"`
			} `json:"kubeletEndpoint"`
		} `json:"daemonEndpoints"`
	} `json:"status"`
}

func (n restNodes) KubeletPort(ctx context.Context, name string) (int, error) {
	res := n.rest.Get().Resource("nodes").Name(name).Do(ctx)
	if err := res.Error(); err != nil { // the API server's Status, where Raw's error would not decode it
		return 0, err
	}
	body, _ := res.Raw()
	var node nodeEndpoint
	if err := json.Unmarshal(body, &node); err != nil {
		return 0, fmt.Errorf("decode node %q: %w", name, err)
	}
	return node.Status.DaemonEndpoints.KubeletEndpoint.Port, nil
}

package collector

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// NodeClient is what discovery reads of the Kubernetes API: one Node for
// the kubelet port in node mode, the list and watch of every Node in
// central mode. client-go's typed NodeInterface satisfies it (a fake
// clientset's CoreV1().Nodes() serves tests); NewNodeClient serves it
// without the typed clientset, whose scheme of every API group would
// weigh on the memory of an agent that runs on every node.
type NodeClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// coreScheme knows the core/v1 types only: all that discovery decodes.
var coreScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		panic(err) // registration of the built-in types cannot fail
	}
	return s
}()

// NewNodeClient reads Node objects through the REST client of config.
func NewNodeClient(config *rest.Config) (NodeClient, error) {
	c := rest.CopyConfig(config)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(coreScheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return restNodes{client: rc, params: runtime.NewParameterCodec(coreScheme)}, nil
}

type restNodes struct {
	client *rest.RESTClient
	params runtime.ParameterCodec
}

func (n restNodes) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := n.client.Get().Resource("nodes").Name(name).VersionedParams(&opts, n.params).Do(ctx).Into(out)
	return out, err
}

func (n restNodes) List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	err := n.client.Get().Resource("nodes").VersionedParams(&opts, n.params).Do(ctx).Into(out)
	return out, err
}

func (n restNodes) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return n.client.Get().Resource("nodes").VersionedParams(&opts, n.params).Watch(ctx)
}

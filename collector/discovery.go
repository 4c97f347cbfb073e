package collector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/proto"
)

// Discovery modes.
const (
	// ModeStatic scrapes collector.targets only.
	ModeStatic = "static"
	// ModeNode is the DaemonSet: the collector scrapes its own node, found
	// from the downward API (NODE_NAME, HOST_IP), at the kubelet port of
	// its Node object.
	ModeNode = "node"
	// ModeCentral scrapes every node of the cluster through the API
	// server's node proxy, following nodes as they come and go.
	ModeCentral = "central"
)

// In-cluster service-account files.
const (
	ServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	ServiceAccountCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// Default ports, as Kubernetes sets them.
const (
	defaultKubeletPort          = 10250
	defaultKubeProxyMetricsPort = 10249
	defaultKubeProxyHealthPort  = 10256
)

// Discovery finds the targets of a collector in a cluster.
type Discovery struct {
	// Mode is static (default), node or central.
	Mode string `yaml:"mode"`
	// KubeletPort overrides the port read from the Node object
	// (status.daemonEndpoints.kubeletEndpoint.port). 0 reads it.
	KubeletPort int `yaml:"kubelet_port"`
	// KubeProxyAddress is the host of kube-proxy's metrics and health
	// ports in node mode. kube-proxy binds its metrics to 127.0.0.1 by
	// default, which a hostNetwork collector reaches; empty is HOST_IP.
	KubeProxyAddress string `yaml:"kube_proxy_address"`
	// KubeProxyMetricsPort and KubeProxyHealthPort are kube-proxy's ports.
	KubeProxyMetricsPort int `yaml:"kube_proxy_metrics_port"`
	KubeProxyHealthPort  int `yaml:"kube_proxy_health_port"`
	// APIServer is the API server of central mode. Empty is the one of
	// the in-cluster configuration (Deps.APIServer).
	APIServer config.URL `yaml:"api_server"`
	// BearerTokenFile authenticates to the kubelet (node mode) or the API
	// server (central mode). It is read at every scrape, so a rotated
	// projected token is used at once.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// TLS verifies the kubelet (node mode) or the API server (central
	// mode). The default CA is the service account's;
	// insecure_skip_verify is an explicit opt-in, warned about at start.
	TLS TLSConfig `yaml:"tls_config"`
}

// DefaultDiscovery uses the service account's token and CA.
func DefaultDiscovery() Discovery {
	return Discovery{
		Mode:                 ModeStatic,
		KubeProxyAddress:     "127.0.0.1",
		KubeProxyMetricsPort: defaultKubeProxyMetricsPort,
		KubeProxyHealthPort:  defaultKubeProxyHealthPort,
		BearerTokenFile:      ServiceAccountTokenFile,
		TLS:                  TLSConfig{CAFile: ServiceAccountCAFile},
	}
}

func (d Discovery) validate() error {
	var errs []error
	switch d.Mode {
	case "", ModeStatic, ModeNode, ModeCentral:
	default:
		errs = append(errs, fmt.Errorf("collector.discovery.mode: unknown mode %q; one of static, node, central", d.Mode))
	}
	for name, p := range map[string]int{"kubelet_port": d.KubeletPort, "kube_proxy_metrics_port": d.KubeProxyMetricsPort, "kube_proxy_health_port": d.KubeProxyHealthPort} {
		if p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("collector.discovery.%s: %d is not a port", name, p))
		}
	}
	return errors.Join(errs...)
}

func (d Discovery) mode() string {
	if d.Mode == "" {
		return ModeStatic
	}
	return d.Mode
}

// sourcePaths are the kubelet and kube-proxy paths of each source.
var sourcePaths = map[proto.Source]string{
	proto.SourceKubelet:         "/metrics",
	proto.SourceCadvisor:        "/metrics/cadvisor",
	proto.SourceResource:        "/metrics/resource",
	proto.SourceProbes:          "/metrics/probes",
	proto.SourceSummary:         "/stats/summary",
	proto.SourceKubeProxy:       "/metrics",
	proto.SourceKubeProxyHealth: "/healthz",
}

func isKubeProxy(s proto.Source) bool {
	return s == proto.SourceKubeProxy || s == proto.SourceKubeProxyHealth
}

// kubeletPort reads the kubelet port of node from its Node object, 10250
// when the object has none.
func kubeletPort(ctx context.Context, nodes NodeClient, node string) (int, error) {
	p, err := nodes.KubeletPort(ctx, node)
	if err != nil {
		return 0, fmt.Errorf("get node %q: %w", node, err)
	}
	if p > 0 {
		return p, nil
	}
	return defaultKubeletPort, nil
}

// nodeTargets are the targets of one node scraped directly: the kubelet at
// hostIP:kubeletPort over https with the discovery token and CA, and
// kube-proxy over http.
func (d Discovery) nodeTargets(node, hostIP string, kubeletPort int, sources *Sources) []TargetConfig {
	var out []TargetConfig
	for _, src := range proto.Sources {
		if !sources.enabled(src) {
			continue
		}
		t := TargetConfig{Source: src, Node: node}
		if isKubeProxy(src) {
			port := d.KubeProxyMetricsPort
			if src == proto.SourceKubeProxyHealth {
				port = d.KubeProxyHealthPort
			}
			host := d.KubeProxyAddress
			if host == "" {
				host = hostIP
			}
			t.URL = config.URL{URL: &url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: sourcePaths[src]}}
		} else {
			t.URL = config.URL{URL: &url.URL{Scheme: "https", Host: net.JoinHostPort(hostIP, strconv.Itoa(kubeletPort)), Path: sourcePaths[src]}}
			t.BearerTokenFile = d.BearerTokenFile
			t.TLS = d.TLS
		}
		out = append(out, t)
	}
	return out
}

// centralTargets are the targets of node scraped through the API server's
// node proxy: /api/v1/nodes/<node>/proxy/<path> for the kubelet, and
// /api/v1/nodes/<node>:<port>/proxy/<path> for kube-proxy.
func (d Discovery) centralTargets(apiServer *url.URL, node string, sources *Sources) []TargetConfig {
	var out []TargetConfig
	for _, src := range proto.Sources {
		if !sources.enabled(src) {
			continue
		}
		name := url.PathEscape(node)
		switch src {
		case proto.SourceKubeProxy:
			name += ":" + strconv.Itoa(d.KubeProxyMetricsPort)
		case proto.SourceKubeProxyHealth:
			name += ":" + strconv.Itoa(d.KubeProxyHealthPort)
		}
		u := *apiServer
		u.Path = apiServer.Path + "/api/v1/nodes/" + name + "/proxy" + sourcePaths[src]
		out = append(out, TargetConfig{
			URL: config.URL{URL: &u}, Source: src, Node: node,
			BearerTokenFile: d.BearerTokenFile, TLS: d.TLS,
		})
	}
	return out
}

// discoverNode resolves node mode's targets, retrying the Node lookup
// until it succeeds or ctx ends: the API server may be briefly away when
// the DaemonSet starts.
func (c *Collector) discoverNode(ctx context.Context) ([]TargetConfig, error) {
	d := c.cfg.Discovery
	port := d.KubeletPort
	wait := time.Second
	for port == 0 {
		p, err := kubeletPort(ctx, c.deps.Nodes, c.deps.Node)
		if err == nil {
			port = p
			break
		}
		c.log.Warn("kubelet port lookup failed; retrying", "node", c.deps.Node, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
	c.log.Info("discovered node", "node", c.deps.Node, "host_ip", c.deps.HostIP, "kubelet_port", port)
	return d.nodeTargets(c.deps.Node, c.deps.HostIP, port, &c.cfg.Sources), nil
}

// watchNodes follows the cluster's nodes with an informer and calls sync
// with the sorted node names at start and after every change, until ctx
// ends. It returns once the informer has stopped.
func (c *Collector) watchNodes(ctx context.Context, sync func(nodes []string)) error {
	nodes := c.deps.Nodes
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return nodes.Watch(ctx, o)
		},
	}, nodes)
	// The names are all central mode needs of a Node: the informer keeps
	// only the metadata, and the API server sends only that.
	inf := cache.NewSharedIndexInformer(lw, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{})
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default: // a sync is already due; it will see this change too
		}
	}
	// Only adds and deletes change the targets; node status updates,
	// every few seconds per node, do not.
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		DeleteFunc: func(any) { notify() },
	}); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	infCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.RunWithContext(infCtx)
	}()
	defer func() { stop(); <-done }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("watch nodes: the node cache did not sync")
	}
	for {
		objs := inf.GetStore().List()
		names := make([]string, 0, len(objs))
		for _, o := range objs {
			names = append(names, o.(*metav1.PartialObjectMetadata).Name)
		}
		slices.Sort(names)
		sync(names)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

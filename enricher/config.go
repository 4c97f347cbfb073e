package enricher

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
)

// Config is the enricher section of the configuration file.
type Config struct {
	// Clusters are the Kubernetes API servers the enricher watches, one per
	// cluster name as it appears in subjects. A cluster that is not listed
	// gets only the cluster and node labels.
	Clusters []ClusterConfig `yaml:"clusters"`
	// LocalInCluster watches the cluster the enricher runs in, the one the
	// top-level cluster key names, with its pod's service account, unless
	// Clusters lists it. Outside a pod it does nothing.
	LocalInCluster bool `yaml:"local_in_cluster"`
	// NodeLabels copy node labels onto every series of the node.
	NodeLabels []LabelRule `yaml:"node_labels"`
	// PodLabels copy pod labels onto every series that names the pod.
	PodLabels []LabelRule `yaml:"pod_labels"`
	// RelabelConfigs run on every series after the join, with Prometheus'
	// metric_relabel_configs semantics (a drop removes the series).
	RelabelConfigs []*relabel.Config `yaml:"relabel_configs"`
	Cardinality    CardinalityConfig `yaml:"cardinality"`
	// SyncTimeout is how long /readyz waits for the first list of every
	// cluster. The enricher consumes from the start either way: series whose
	// pod is not known yet pass with the cluster and node labels.
	SyncTimeout time.Duration `yaml:"sync_timeout"`
	// Resync is the informers' resync period; 0 disables it, which is right
	// for a cache that only answers lookups.
	Resync time.Duration `yaml:"resync"`
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending bounds the messages delivered and not yet acknowledged
	// on each partition's consumer.
	MaxAckPending int `yaml:"max_ack_pending"`
}

// ClusterConfig is how to reach one cluster's API server: a kubeconfig file,
// or the service account of the pod the enricher runs in.
type ClusterConfig struct {
	// Name is the cluster name of the subjects (the collectors' cluster).
	Name       string `yaml:"name"`
	Kubeconfig string `yaml:"kubeconfig"`
	// Context picks a context of the kubeconfig; empty is its current one.
	Context   string `yaml:"context"`
	InCluster bool   `yaml:"in_cluster"`
	local     bool   // added by LocalInCluster, not configured
}

// LabelRule adds the label Name with the value of the first Kubernetes
// label of From the object has. Several sources cover providers that name
// the same thing differently (EKS, eksctl and GKE node groups).
type LabelRule struct {
	Name string   `yaml:"name"`
	From []string `yaml:"from"`
}

// CardinalityConfig bounds how fast a scrape target may create series.
type CardinalityConfig struct {
	// NewSeriesPerMinute is how many series a target (cluster, node and
	// source) may start per minute; beyond it its new series are dropped
	// and counted, its known series keep flowing. 0 disables the guard.
	NewSeriesPerMinute int `yaml:"new_series_per_minute"`
	// Forget is how long a series may be absent before it counts as new.
	Forget time.Duration `yaml:"forget_after"`
	// MaxSeries bounds the series the guard remembers across all targets,
	// and so its memory (about 40 bytes each); beyond it every new series
	// is dropped.
	MaxSeries int `yaml:"max_series"`
}

// DefaultConfig returns the defaults a configuration file overrides.
func DefaultConfig() Config {
	return Config{
		NodeLabels: []LabelRule{
			{Name: "zone", From: []string{"topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"}},
			{Name: "region", From: []string{"topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"}},
			{Name: "instance_type", From: []string{"node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"}},
			{Name: "nodegroup", From: []string{"eks.amazonaws.com/nodegroup", "alpha.eksctl.io/nodegroup-name", "cloud.google.com/gke-nodepool"}},
		},
		PodLabels: []LabelRule{
			{Name: "app", From: []string{"app.kubernetes.io/name", "app"}},
		},
		Cardinality: CardinalityConfig{
			NewSeriesPerMinute: 50_000,
			Forget:             15 * time.Minute,
			MaxSeries:          2_000_000,
		},
		LocalInCluster: true,
		SyncTimeout:    30 * time.Second,
		AckWait:        30 * time.Second,
		MaxAckPending:  64,
	}
}

// The labels the enricher sets itself; rules may not reuse their names.
const (
	LabelCluster      = "cluster"
	LabelNode         = "node"
	LabelWorkloadKind = "workload_kind"
	LabelWorkload     = "workload"
)

var (
	clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
	labelNameRE   = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Validate reports every invalid field at once, each with its path in the
// file: "enricher.node_labels[2].name".
func (c Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("enricher.%s: %s", path, fmt.Sprintf(format, args...)))
	}
	seen := map[string]bool{}
	for i, cl := range c.Clusters {
		path := fmt.Sprintf("clusters[%d]", i)
		switch {
		case cl.Name == "":
			bad(path+".name", "required")
		case !clusterNameRE.MatchString(cl.Name):
			bad(path+".name", "must match %s, got %q", clusterNameRE, cl.Name)
		case seen[cl.Name]:
			bad(path+".name", "%q listed twice", cl.Name)
		}
		seen[cl.Name] = true
		if (cl.Kubeconfig == "") == !cl.InCluster {
			bad(path, "set exactly one of kubeconfig and in_cluster")
		}
		if cl.InCluster && cl.Context != "" {
			bad(path+".context", "only with kubeconfig")
		}
	}
	names := map[string]string{LabelCluster: "built in", LabelNode: "built in", LabelWorkloadKind: "built in", LabelWorkload: "built in"}
	checkRules := func(field string, rules []LabelRule) {
		for i, r := range rules {
			path := fmt.Sprintf("%s[%d]", field, i)
			switch {
			case !labelNameRE.MatchString(r.Name):
				bad(path+".name", "must be a label name ([a-zA-Z_][a-zA-Z0-9_]*), got %q", r.Name)
			case names[r.Name] != "":
				bad(path+".name", "%q is already set by %s", r.Name, names[r.Name])
			}
			names[r.Name] = path
			if len(r.From) == 0 {
				bad(path+".from", "at least one Kubernetes label required")
			}
			for j, f := range r.From {
				if f == "" {
					bad(fmt.Sprintf("%s.from[%d]", path, j), "empty")
				}
			}
		}
	}
	checkRules("node_labels", c.NodeLabels)
	checkRules("pod_labels", c.PodLabels)
	for i, rc := range c.RelabelConfigs {
		if rc == nil {
			bad(fmt.Sprintf("relabel_configs[%d]", i), "empty rule")
			continue
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			bad(fmt.Sprintf("relabel_configs[%d]", i), "%v", err)
		}
	}
	g := c.Cardinality
	if g.NewSeriesPerMinute < 0 {
		bad("cardinality.new_series_per_minute", "must be 0 (off) or positive, got %d", g.NewSeriesPerMinute)
	}
	if g.NewSeriesPerMinute > 0 {
		if g.Forget < time.Minute {
			bad("cardinality.forget_after", "must be at least 1m, got %s", g.Forget)
		}
		if g.MaxSeries <= 0 {
			bad("cardinality.max_series", "must be positive, got %d", g.MaxSeries)
		}
	}
	if c.SyncTimeout <= 0 {
		bad("sync_timeout", "must be positive, got %s", c.SyncTimeout)
	}
	if c.Resync < 0 {
		bad("resync", "must be 0 (off) or positive, got %s", c.Resync)
	}
	if c.AckWait < time.Second {
		bad("ack_wait", "must be at least 1s, got %s", c.AckWait)
	}
	if c.MaxAckPending <= 0 {
		bad("max_ack_pending", "must be positive, got %d", c.MaxAckPending)
	}
	return errors.Join(errs...)
}

package enricher

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// The resources the join needs. Deployments, CronJobs, StatefulSets and
// DaemonSets are not watched: an owner reference already names them.
var (
	gvrNodes       = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	gvrPods        = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	gvrReplicaSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	gvrJobs        = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
)

// clusterMeta is the metadata of one cluster: one metadata-only informer
// per resource, whose stores keep only what the join reads (see strip).
type clusterMeta struct {
	name    string
	factory metadatainformer.SharedInformerFactory
	nodes   cache.SharedIndexInformer
	pods    cache.SharedIndexInformer
	rs      cache.SharedIndexInformer
	jobs    cache.SharedIndexInformer
	synced  atomic.Bool
	changes changeLog
}

// newClusterMeta builds the informers of one cluster; start runs them.
// The transforms keep only the allowlisted labels and the controller
// reference, so that 150,000 pods fit in little memory.
func newClusterMeta(name string, client metadata.Interface, resync time.Duration, nodeKeys, podKeys map[string]bool, m *metrics) (*clusterMeta, error) {
	f := metadatainformer.NewSharedInformerFactory(client, resync)
	c := &clusterMeta{name: name, factory: f}
	for _, r := range []struct {
		gvr  schema.GroupVersionResource
		dst  *cache.SharedIndexInformer
		keep map[string]bool
		name string
	}{
		{gvrNodes, &c.nodes, nodeKeys, "nodes"},
		{gvrPods, &c.pods, podKeys, "pods"},
		{gvrReplicaSets, &c.rs, nil, "replicasets"},
		{gvrJobs, &c.jobs, nil, "jobs"},
	} {
		inf := f.ForResource(r.gvr).Informer()
		if err := inf.SetTransform(strip(r.keep)); err != nil {
			return nil, fmt.Errorf("cluster %s: %s informer: %w", name, r.name, err)
		}
		size := m.cacheObjects.WithLabelValues(name, r.name)
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {
				size.Inc()
				c.changes.record(obj)
			},
			UpdateFunc: func(old, obj any) {
				if !sameJoinedMeta(old, obj) {
					c.changes.record(obj)
				}
			},
			DeleteFunc: func(obj any) {
				size.Dec()
				c.changes.record(obj)
			},
		}); err != nil {
			return nil, fmt.Errorf("cluster %s: %s informer: %w", name, r.name, err)
		}
		*r.dst = inf
	}
	return c, nil
}

// run starts the informers, marks the cluster synced once every first list
// arrived, and stops them when ctx ends.
func (c *clusterMeta) run(ctx context.Context, log *slog.Logger, syncedGauge func(bool)) {
	c.factory.Start(ctx.Done())
	start := time.Now()
	if cache.WaitForCacheSync(ctx.Done(), c.nodes.HasSynced, c.pods.HasSynced, c.rs.HasSynced, c.jobs.HasSynced) {
		c.synced.Store(true)
		syncedGauge(true)
		log.Info("kubernetes metadata synced", "cluster", c.name, "took", time.Since(start).Round(time.Millisecond),
			"nodes", len(c.nodes.GetStore().ListKeys()), "pods", len(c.pods.GetStore().ListKeys()))
	}
	<-ctx.Done()
	c.factory.Shutdown()
}

// strip returns the transform that reduces an object to its name,
// namespace, resource version, the labels in keep and its controller
// reference. Annotations, managed fields and the rest never reach the store.
func strip(keep map[string]bool) cache.TransformFunc {
	return func(obj any) (any, error) {
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			return obj, nil // a tombstone: already stripped when stored
		}
		out := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Name:            m.Name,
			Namespace:       m.Namespace,
			ResourceVersion: m.ResourceVersion,
		}}
		for k, v := range m.Labels {
			if keep[k] && v != "" {
				if out.Labels == nil {
					out.Labels = make(map[string]string, 2)
				}
				out.Labels[k] = v
			}
		}
		if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
			out.OwnerReferences = []metav1.OwnerReference{{Kind: ref.Kind, Name: ref.Name}}
		}
		return out, nil
	}
}

// get returns the stored metadata of key ("name" or "namespace/name").
func get(inf cache.SharedIndexInformer, key string) *metav1.PartialObjectMetadata {
	obj, ok, err := inf.GetIndexer().GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	m, _ := obj.(*metav1.PartialObjectMetadata)
	return m
}

func controller(m *metav1.PartialObjectMetadata) (kind, name string, ok bool) {
	if len(m.OwnerReferences) == 0 {
		return "", "", false
	}
	return m.OwnerReferences[0].Kind, m.OwnerReferences[0].Name, true
}

// sameJoinedMeta reports whether an update left what the join reads of an
// object as it was: a resync, or a change of a label the join does not keep.
func sameJoinedMeta(old, obj any) bool {
	a, ok1 := old.(*metav1.PartialObjectMetadata)
	b, ok2 := obj.(*metav1.PartialObjectMetadata)
	return ok1 && ok2 && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.OwnerReferences, b.OwnerReferences)
}

// changeLog numbers the changes of a cluster's metadata and remembers the
// keys of the last changeLogSize of them, so that the steady path can tell
// whether an output built earlier read an object changed since.
type changeLog struct {
	mu   sync.Mutex
	seq  uint64 // changes so far
	keys [changeLogSize]string
}

// changeLogSize is how many changes a steady target's output outlives: a
// cluster changing more between two scrapes of a target sends it through
// the slow path.
const changeLogSize = 4096

// record notes a change of obj. The informers call it once their store
// holds the change: a join that began before the change was numbered, and
// so may have read the object as it was, saw an earlier number.
func (l *changeLog) record(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	if err != nil {
		key = "" // cannot be matched: it fails every check below
	}
	l.keys[l.seq%changeLogSize] = key
}

// current is the number of the last change.
func (l *changeLog) current() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// unchangedSince reports whether no object in read changed after change
// number since, and the number of the last change.
func (l *changeLog) unchangedSince(since uint64, read map[string]struct{}) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seq-since > changeLogSize {
		return l.seq, false
	}
	for n := since + 1; n <= l.seq; n++ {
		key := l.keys[n%changeLogSize]
		if _, ok := read[key]; ok || key == "" {
			return l.seq, false
		}
	}
	return l.seq, true
}

// workload resolves the controller a pod belongs to: ReplicaSet to its
// Deployment, Job to its CronJob; StatefulSet, DaemonSet and any other
// controller stand for themselves. A pod without a controller is its own
// workload, kind Pod, so that every pod series has a workload to sum by.
// A ReplicaSet or Job not in the cache yet is reported as itself. owner is
// the key of the ReplicaSet or Job looked up, "" when none was.
func (c *clusterMeta) workload(pod *metav1.PartialObjectMetadata) (kind, name, owner string) {
	kind, name, ok := controller(pod)
	if !ok {
		return "Pod", pod.Name, ""
	}
	var parent cache.SharedIndexInformer
	switch kind {
	case "ReplicaSet":
		parent = c.rs
	case "Job":
		parent = c.jobs
	default:
		return kind, name, ""
	}
	owner = pod.Namespace + "/" + name
	if o := get(parent, owner); o != nil {
		if k, n, ok := controller(o); ok {
			return k, n, owner
		}
	}
	return kind, name, owner
}

// restConfig is how to reach one cluster's API server.
func restConfig(cl ClusterConfig) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if cl.InCluster {
		cfg, err = rest.InClusterConfig()
	} else {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: cl.Kubeconfig}
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: cl.Context}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("cluster %s: kubernetes client config: %w", cl.Name, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "weir-enricher"
	return cfg, nil
}

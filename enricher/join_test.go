package enricher

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weirmetrics/weir/proto"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func series(kv ...string) prompb.TimeSeries {
	var ls []prompb.Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	sortLabels(ls)
	return prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}
}

// testCluster is a cluster with one node and a pod for every owner chain.
func testCluster() []*metav1.PartialObjectMetadata {
	return []*metav1.PartialObjectMetadata{
		node("node-a", map[string]string{
			"topology.kubernetes.io/zone":      "eu-west-1a",
			"topology.kubernetes.io/region":    "eu-west-1",
			"node.kubernetes.io/instance-type": "m5.large",
			"alpha.eksctl.io/nodegroup-name":   "workers",
			"kubernetes.io/hostname":           "node-a", // not allowlisted
		}),
		replicaSet("shop", "web-5d9c", "Deployment", "web"),
		pod("shop", "web-5d9c-x1", map[string]string{"app.kubernetes.io/name": "web", "pod-template-hash": "5d9c"}, "ReplicaSet", "web-5d9c"),
		replicaSet("shop", "lonely"),
		pod("shop", "lonely-z", map[string]string{"app": "lonely"}, "ReplicaSet", "lonely"),
		job("batch", "report-2900", "CronJob", "report"),
		pod("batch", "report-2900-q", nil, "Job", "report-2900"),
		job("batch", "oneoff"),
		pod("batch", "oneoff-q", nil, "Job", "oneoff"),
		pod("shop", "db-0", map[string]string{"app": "db"}, "StatefulSet", "db"),
		pod("kube-system", "agent-7x", nil, "DaemonSet", "agent"),
		pod("kube-system", "etcd-node-a", nil, "Node", "node-a"),
		pod("shop", "debug", nil),
	}
}

func startCluster(t *testing.T, objs []*metav1.PartialObjectMetadata) (*clusterMeta, *metrics) {
	t.Helper()
	client := trackedClient(t, objs)
	cfg := DefaultConfig()
	_, nodeKeys := compileRules(cfg.NodeLabels)
	_, podKeys := compileRules(cfg.PodLabels)
	m := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })
	c, err := newClusterMeta("c1", client, 0, nodeKeys, podKeys, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	runMeta(t, ctx, c)
	return c, m
}

func testJoiner() *joiner {
	cfg := DefaultConfig()
	nr, _ := compileRules(cfg.NodeLabels)
	pr, _ := compileRules(cfg.PodLabels)
	return newJoiner(nr, pr)
}

func TestJoin(t *testing.T) {
	c, _ := startCluster(t, testCluster())
	nodeLabels := map[string]string{"cluster": "c1", "node": "node-a", "zone": "eu-west-1a", "region": "eu-west-1", "instance_type": "m5.large", "nodegroup": "workers"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name        string
		in          prompb.TimeSeries
		want        map[string]string
		unknownPods int
	}{
		{"node series", series("__name__", "machine_cpu_cores"),
			with(nodeLabels, "__name__", "machine_cpu_cores"), 0},
		{"deployment through replicaset", series("__name__", "x", "namespace", "shop", "pod", "web-5d9c-x1", "container", "nginx"),
			with(nodeLabels, "__name__", "x", "namespace", "shop", "pod", "web-5d9c-x1", "container", "nginx", "app", "web", "workload_kind", "Deployment", "workload", "web"), 0},
		{"replicaset without deployment", series("namespace", "shop", "pod", "lonely-z"),
			with(nodeLabels, "namespace", "shop", "pod", "lonely-z", "app", "lonely", "workload_kind", "ReplicaSet", "workload", "lonely"), 0},
		{"cronjob through job", series("namespace", "batch", "pod", "report-2900-q"),
			with(nodeLabels, "namespace", "batch", "pod", "report-2900-q", "workload_kind", "CronJob", "workload", "report"), 0},
		{"job without cronjob", series("namespace", "batch", "pod", "oneoff-q"),
			with(nodeLabels, "namespace", "batch", "pod", "oneoff-q", "workload_kind", "Job", "workload", "oneoff"), 0},
		{"statefulset", series("namespace", "shop", "pod", "db-0"),
			with(nodeLabels, "namespace", "shop", "pod", "db-0", "app", "db", "workload_kind", "StatefulSet", "workload", "db"), 0},
		{"daemonset", series("namespace", "kube-system", "pod", "agent-7x"),
			with(nodeLabels, "namespace", "kube-system", "pod", "agent-7x", "workload_kind", "DaemonSet", "workload", "agent"), 0},
		{"static pod owned by its node", series("namespace", "kube-system", "pod", "etcd-node-a"),
			with(nodeLabels, "namespace", "kube-system", "pod", "etcd-node-a", "workload_kind", "Node", "workload", "node-a"), 0},
		{"bare pod is its own workload", series("namespace", "shop", "pod", "debug"),
			with(nodeLabels, "namespace", "shop", "pod", "debug", "workload_kind", "Pod", "workload", "debug"), 0},
		{"pre-1.16 pod_name and container_name", series("__name__", "container_memory_rss", "namespace", "shop", "pod_name", "db-0", "container_name", "pg"),
			with(nodeLabels, "__name__", "container_memory_rss", "namespace", "shop", "pod_name", "db-0", "container_name", "pg", "app", "db", "workload_kind", "StatefulSet", "workload", "db"), 0},
		{"pod wins over pod_name", series("namespace", "shop", "pod", "db-0", "pod_name", "lonely-z"),
			with(nodeLabels, "namespace", "shop", "pod", "db-0", "pod_name", "lonely-z", "app", "db", "workload_kind", "StatefulSet", "workload", "db"), 0},
		{"empty pod falls back to pod_name", series("namespace", "shop", "pod", "", "pod_name", "db-0"),
			with(nodeLabels, "namespace", "shop", "pod", "", "pod_name", "db-0", "app", "db", "workload_kind", "StatefulSet", "workload", "db"), 0},
		{"pod not yet seen passes with cluster and node", series("namespace", "shop", "pod", "web-5d9c-new"),
			with(nodeLabels, "namespace", "shop", "pod", "web-5d9c-new"), 1},
		{"scraped cluster and node become exported_", series("cluster", "fake", "node", "other", "exported_cluster", "taken"),
			with(nodeLabels, "exported_exported_cluster", "fake", "exported_node", "other", "exported_cluster", "taken"), 0},
	}
	j := testJoiner()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j.begin(c, "c1", "node-a")
			b := proto.Batch{Series: []prompb.TimeSeries{tt.in}}
			st := j.enrich(c, &b)
			if got := labelMap(t, b.Series[0].Labels); !maps.Equal(got, tt.want) {
				t.Errorf("labels\n got %v\nwant %v", got, tt.want)
			}
			if st.unknownPods != tt.unknownPods {
				t.Errorf("unknown pods %d, want %d", st.unknownPods, tt.unknownPods)
			}
		})
	}
}

// The join of a whole message shares plans between series with the same
// label names, merges each with the extra labels of several shapes, caches
// pods, and keeps plans from message to message. Each series of a decoded
// message must get exactly what joining it alone gets, whatever the series
// before it, including one whose names have the lengths of another's
// (container and namespace), a pod of the same name in another namespace,
// and the same series on a node without labels.
func TestJoinOfAMessageIsTheJoinOfEachSeries(t *testing.T) {
	c, _ := startCluster(t, testCluster())
	msg := proto.Batch{Series: []prompb.TimeSeries{
		series("__name__", "x", "namespace", "shop", "pod", "web-5d9c-x1"),
		series("__name__", "x", "namespace", "batch", "pod", "report-2900-q"), // no app label: another shape
		series("__name__", "x", "container", "shop", "pod", "db-0"),           // name lengths of the first
		series("__name__", "y", "namespace", "shop", "pod", "db-0"),
		series("__name__", "y", "namespace", "batch", "pod", "db-0"), // not a pod
		series("__name__", "y", "namespace", "shop", "pod", "web-5d9c-x1"),
		series("__name__", "z", "namespace", "shop", "pod", "", "pod_name", "db-0"),
		series("__name__", "z", "namespace", "shop", "pod", "lonely-z", "pod_name", "db-0"),
		series("cluster", "fake", "namespace", "shop", "pod", "db-0"),
		series("__name__", "machine_cpu_cores"),
		series("cluster", "fake", "namespace", "shop", "pod", "web-5d9c-x1"),
		series("__name__", "x", "namespace", "shop", "pod", "web-5d9c-x1"),
	}}
	payload, err := proto.BlockZstd{}.Append(nil, &msg)
	if err != nil {
		t.Fatal(err)
	}
	j := testJoiner()
	for _, node := range []string{"node-a", "node-b", "node-a"} {
		var b proto.Batch
		if err := (proto.BlockZstd{}).Decode(payload, &b); err != nil {
			t.Fatal(err)
		}
		j.begin(c, "c1", node)
		st := j.enrich(c, &b)
		unknown := 0
		for i, in := range msg.Series {
			alone := testJoiner()
			alone.begin(c, "c1", node)
			one := proto.Batch{Series: []prompb.TimeSeries{{Labels: slices.Clone(in.Labels)}}}
			unknown += alone.enrich(c, &one).unknownPods
			if got, want := labelMap(t, b.Series[i].Labels), labelMap(t, one.Series[0].Labels); !maps.Equal(got, want) {
				t.Errorf("%s, series %d:\n got %v\nwant %v", node, i, got, want)
			}
		}
		if st.unknownPods != unknown || unknown != 1 {
			t.Errorf("%s: %d series of unknown pods, joined alone %d, want 1", node, st.unknownPods, unknown)
		}
	}
}

func TestJoinClusterWithoutCredentials(t *testing.T) {
	j := testJoiner()
	j.begin(nil, "edge-7", "n1")
	b := proto.Batch{Series: []prompb.TimeSeries{series("__name__", "x", "namespace", "shop", "pod", "db-0")}}
	j.enrich(nil, &b)
	want := map[string]string{"__name__": "x", "namespace": "shop", "pod": "db-0", "cluster": "edge-7", "node": "n1"}
	if got := labelMap(t, b.Series[0].Labels); !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// Pods come and go: a new pod gets its labels once the watch delivers it,
// a deleted pod loses them (and leaves the cache), and the cache-size
// metric follows.
func TestJoinFollowsPodLifecycle(t *testing.T) {
	client := trackedClient(t, testCluster())
	cfg := DefaultConfig()
	_, nodeKeys := compileRules(cfg.NodeLabels)
	_, podKeys := compileRules(cfg.PodLabels)
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, func() float64 { return 0 })
	c, err := newClusterMeta("c1", client, 0, nodeKeys, podKeys, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runMeta(t, ctx, c)

	j := testJoiner()
	workload := func(ns, name string) (string, int) {
		j.begin(c, "c1", "node-a")
		b := proto.Batch{Series: []prompb.TimeSeries{series("namespace", ns, "pod", name)}}
		st := j.enrich(c, &b)
		return labelMap(t, b.Series[0].Labels)["workload"], st.unknownPods
	}
	if w, unknown := workload("shop", "web-5d9c-y2"); w != "" || unknown != 1 {
		t.Fatalf("pod not yet created: workload %q, unknown %d", w, unknown)
	}
	pods := client.Resource(gvrPods).Namespace("shop")
	if _, err := pods.(interface {
		CreateFake(*metav1.PartialObjectMetadata, metav1.CreateOptions, ...string) (*metav1.PartialObjectMetadata, error)
	}).CreateFake(pod("shop", "web-5d9c-y2", nil, "ReplicaSet", "web-5d9c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new pod in cache", func() bool { w, _ := workload("shop", "web-5d9c-y2"); return w == "web" })
	size := m.cacheObjects.WithLabelValues("c1", "pods")
	if got := gaugeValue(t, size); got != 9 {
		t.Errorf("weir_enricher_cache_objects{resource=pods} = %v, want 9", got)
	}

	if err := pods.Delete(ctx, "web-5d9c-x1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted pod gone", func() bool { w, unknown := workload("shop", "web-5d9c-x1"); return w == "" && unknown == 1 })
	if got := gaugeValue(t, size); got != 8 {
		t.Errorf("weir_enricher_cache_objects{resource=pods} after delete = %v, want 8", got)
	}
}

// What the store keeps of an object is only what the join reads.
func TestStripKeepsOnlyWhatTheJoinNeeds(t *testing.T) {
	in := pod("shop", "web-1", map[string]string{"app": "web", "secret-ish": "x"}, "ReplicaSet", "web-5d9c")
	out, err := strip(map[string]bool{"app": true})(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*metav1.PartialObjectMetadata)
	if got.Annotations != nil || got.ManagedFields != nil {
		t.Errorf("annotations or managed fields kept: %+v", got.ObjectMeta)
	}
	if !maps.Equal(got.Labels, map[string]string{"app": "web"}) {
		t.Errorf("labels %v, want only app", got.Labels)
	}
	if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].Kind != "ReplicaSet" || got.OwnerReferences[0].Name != "web-5d9c" {
		t.Errorf("owner references %+v, want only the controller", got.OwnerReferences)
	}
	if got.Name != "web-1" || got.Namespace != "shop" {
		t.Errorf("identity lost: %s/%s", got.Namespace, got.Name)
	}
}

package enricher

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/metadata"
	metadatafake "k8s.io/client-go/metadata/fake"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// klog's flush daemon starts with the package and never ends.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// captureBatch parses a real text capture as the collector publishes it:
// labels sorted, empty values dropped.
func captureBatch(t testing.TB, file string) proto.Batch {
	t.Helper()
	p, err := textparse.New(fixtures.Read(file), "text/plain; version=0.0.4", labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b proto.Batch
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return b
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if e != textparse.EntrySeries {
			continue
		}
		_, ts, v := p.Series()
		var ls labels.Labels
		p.Labels(&ls)
		var pl []prompb.Label
		ls.Range(func(l labels.Label) {
			if l.Value != "" {
				pl = append(pl, prompb.Label{Name: l.Name, Value: l.Value})
			}
		})
		stamp := int64(1_700_000_000_000)
		if ts != nil {
			stamp = *ts
		}
		b.Series = append(b.Series, prompb.TimeSeries{Labels: pl, Samples: []prompb.Sample{{Value: v, Timestamp: stamp}}})
	}
}

func object(apiVersion, kind, namespace, name string, lbls map[string]string, owner ...string) *metav1.PartialObjectMetadata {
	o := &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: kind},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name, Labels: lbls,
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 512)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
		},
	}
	if len(owner) == 2 {
		yes := true
		o.OwnerReferences = []metav1.OwnerReference{
			{APIVersion: "v1", Kind: "ConfigMap", Name: "not-a-controller"},
			{APIVersion: "apps/v1", Kind: owner[0], Name: owner[1], Controller: &yes},
		}
	}
	return o
}

func node(name string, lbls map[string]string) *metav1.PartialObjectMetadata {
	return object("v1", "Node", "", name, lbls)
}

func pod(ns, name string, lbls map[string]string, owner ...string) *metav1.PartialObjectMetadata {
	return object("v1", "Pod", ns, name, lbls, owner...)
}

func replicaSet(ns, name string, owner ...string) *metav1.PartialObjectMetadata {
	return object("apps/v1", "ReplicaSet", ns, name, nil, owner...)
}

func job(ns, name string, owner ...string) *metav1.PartialObjectMetadata {
	return object("batch/v1", "Job", ns, name, nil, owner...)
}

func fakeClient(objs ...runtime.Object) *metadatafake.FakeMetadataClient {
	scheme := metadatafake.NewTestScheme()
	_ = metav1.AddMetaToScheme(scheme)
	return metadatafake.NewSimpleMetadataClient(scheme, objs...)
}

// eventually polls cond until it holds or the test's patience ends.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// labelMap turns labels into a map, failing on unsorted or repeated names.
func labelMap(t testing.TB, ls []prompb.Label) map[string]string {
	t.Helper()
	if !slices.IsSortedFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("labels not sorted: %v", ls)
	}
	m := map[string]string{}
	for _, l := range ls {
		if _, dup := m[l.Name]; dup {
			t.Fatalf("label %q twice: %v", l.Name, ls)
		}
		m[l.Name] = l.Value
	}
	return m
}

func runMeta(t testing.TB, ctx context.Context, c *clusterMeta) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(ctx, discard(), func(bool) {})
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "metadata sync", c.synced.Load)
}

func gaugeValue(t testing.TB, g interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// metricValue is the value of an unlabelled counter or gauge in reg.
func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			if c := mf.Metric[0].Counter; c != nil {
				return c.GetValue()
			}
			return mf.Metric[0].Gauge.GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func newBuilder() *labels.Builder { return labels.NewBuilder(labels.EmptyLabels()) }

// trackedClient is a fake clientset holding objs.
func trackedClient(t *testing.T, objs []*metav1.PartialObjectMetadata) *metadatafake.FakeMetadataClient {
	t.Helper()
	client := fakeClient()
	for _, o := range objs {
		if err := client.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return client
}

// waitInputAcked waits until every partition of the raw stream has been
// read and acknowledged.
func waitInputAcked(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	eventually(t, "input acknowledged", func() bool {
		for p := range testPartitions {
			c, err := js.Consumer(context.Background(), proto.StreamRaw, partition.ConsumerName(Durable, p))
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			if err != nil {
				return false
			}
			if acked, err := natstest.Acked(context.Background(), js, info); err != nil || !acked {
				return false
			}
		}
		return true
	})
}

// startCaptureEnricher starts an enricher of cluster c1, whose metadata is
// that of the cAdvisor capture's pods, and waits until it is ready; it
// returns the enricher's registry.
func startCaptureEnricher(t *testing.T, js jetstream.JetStream) *prometheus.Registry {
	t.Helper()
	ready := make(chan struct{})
	reg := prometheus.NewRegistry()
	startEnricher(t, DefaultConfig(), Deps{JS: js, Reg: reg, Member: "a",
		Metadata: map[string]metadata.Interface{"c1": fakeClient(captureCluster()...)},
		Ready:    func() { close(ready) }})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("never ready")
	}
	return reg
}

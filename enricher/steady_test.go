package enricher

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/prompb"
	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"

	"github.com/weirmetrics/weir/proto"
)

// TestSteadyPathAsSlowPath: an enricher with the steady path publishes,
// message after message, the very bytes of one without it, while the
// metadata, the series and the guard's limits change underneath; and it
// reuses an earlier output exactly when nothing the output depended on
// changed.
func TestSteadyPathAsSlowPath(t *testing.T) {
	client := trackedClient(t, testCluster())
	cfg := DefaultConfig()
	_, nodeKeys := compileRules(cfg.NodeLabels)
	_, podKeys := compileRules(cfg.PodLabels)
	c, err := newClusterMeta("c1", client, 0, nodeKeys, podKeys, newMetrics(nil, func() float64 { return 0 }))
	if err != nil {
		t.Fatal(err)
	}
	runMeta(t, t.Context(), c)

	if err := yaml.Unmarshal([]byte(`
- source_labels: [__name__]
  regex: drop_me
  action: drop
`), &cfg.RelabelConfigs); err != nil {
		t.Fatal(err)
	}
	cfg.Cardinality = CardinalityConfig{NewSeriesPerMinute: 24, Forget: 2 * time.Minute, MaxSeries: 1000}
	clock := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return clock }
	both := newFastAndSlow(t, cfg, now, c)
	fast, slow := both.fast, both.slow

	// The series of a cAdvisor scrape of node-a: pods known and not, a
	// node-wide series and one the relabel rules drop.
	scrape := func(pods ...string) []prompb.TimeSeries {
		out := []prompb.TimeSeries{series("__name__", "machine_cpu_cores"), series("__name__", "drop_me")}
		for _, p := range pods {
			out = append(out, series("__name__", "container_cpu_usage_seconds_total", "namespace", "shop", "pod", p),
				series("__name__", "container_memory_working_set_bytes", "namespace", "shop", "pod", p))
		}
		return out
	}
	step := 0
	// send enriches a scrape with new samples on both and compares them; it
	// returns the output and whether the steady path reused an earlier one.
	send := func(what string, ss []prompb.TimeSeries) ([]byte, bool) {
		t.Helper()
		step++
		for i := range ss {
			ss[i].Samples = []prompb.Sample{{Timestamp: clock.UnixMilli(), Value: float64(step*100 + i)}}
		}
		payload, err := proto.BlockZstd{}.Append(nil, &proto.Batch{Series: ss})
		if err != nil {
			t.Fatal(err)
		}
		h := nats.Header{}
		h.Set(proto.HeaderEncoding, proto.BlockZstd{}.Name())
		in, err := readInput("weir.raw.c1.node-a.cadvisor.3", h, payload)
		if err != nil {
			t.Fatal(err)
		}
		reusedBefore := gaugeValue(t, fast.metrics.reused)
		want := both.same(t, what, in)
		if len(want) == 0 {
			return nil, gaugeValue(t, fast.metrics.reused) > reusedBefore
		}
		return want[0].Payload, gaugeValue(t, fast.metrics.reused) > reusedBefore
	}
	expect := func(what string, ss []prompb.TimeSeries, reuse bool) []byte {
		t.Helper()
		out, reused := send(what, ss)
		if reused != reuse {
			t.Fatalf("%s: reused %v, want %v", what, reused, reuse)
		}
		return out
	}
	// expectChurn expects the churn path to reuse reused series of the
	// target's last output.
	expectChurn := func(what string, ss []prompb.TimeSeries, reused float64) {
		t.Helper()
		before := gaugeValue(t, fast.metrics.seriesReused)
		expect(what, ss, false)
		if got := gaugeValue(t, fast.metrics.seriesReused) - before; got != reused {
			t.Fatalf("%s: %v series reused, want %v", what, got, reused)
		}
	}
	// change applies a change to the cluster and waits until the informer
	// told of it.
	change := func(gvr schema.GroupVersionResource, o *metav1.PartialObjectMetadata, create bool) {
		t.Helper()
		before := c.changes.current()
		err := client.Tracker().Update(gvr, o, o.Namespace)
		if create {
			err = client.Tracker().Create(gvr, o, o.Namespace)
		}
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "metadata change", func() bool { return c.changes.current() > before })
	}

	pods := []string{"web-5d9c-x1", "lonely-z", "db-0"}
	expect("first scrape", scrape(pods...), false)
	expect("same series", scrape(pods...), true)

	change(gvrPods, pod("shop", "web-5d9c-x1", map[string]string{"app.kubernetes.io/name": "web-v2"}, "ReplicaSet", "web-5d9c"), false)
	if got := labelOf(t, expect("pod label changed", scrape(pods...), false), "web-5d9c-x1", "app"); got != "web-v2" {
		t.Fatalf("app=%q after the pod change, want web-v2", got)
	}
	expect("same series after the pod change", scrape(pods...), true)

	change(gvrPods, pod("batch", "oneoff-q", map[string]string{"app": "other"}, "Job", "oneoff"), false)
	expect("a pod of no series changed", scrape(pods...), true)

	change(gvrNodes, node("node-a", map[string]string{"topology.kubernetes.io/zone": "eu-west-1b"}), false)
	if got := labelOf(t, expect("node label changed", scrape(pods...), false), "db-0", "zone"); got != "eu-west-1b" {
		t.Fatalf("zone=%q after the node change, want eu-west-1b", got)
	}
	expect("same series after the node change", scrape(pods...), true)

	withNew := append(pods, "web-5d9c-y2")
	expect("a pod not in the cache yet", scrape(withNew...), false)
	expect("same series with the unknown pod", scrape(withNew...), true)
	change(gvrPods, pod("shop", "web-5d9c-y2", map[string]string{"app": "web"}, "ReplicaSet", "web-5d9c"), true)
	if got := labelOf(t, expect("the pod created", scrape(withNew...), false), "web-5d9c-y2", "workload"); got != "web" {
		t.Fatalf("workload=%q of the new pod, want web", got)
	}
	expect("same series after the pod was created", scrape(withNew...), true)

	// A pod went away: its series are gone, the others' kept.
	expectChurn("fewer series", scrape("lonely-z"), 3)
	expect("fewer series again", scrape("lonely-z"), true)
	expect("the series before", scrape(withNew...), true)

	// 20 new series so far this minute (a label change makes new ones): 4
	// more, then the guard drops.
	var many []string
	for i := range 6 {
		many = append(many, fmt.Sprintf("burst-%d", i))
	}
	expect("over the guard's limit", scrape(many...), false)
	if got := gaugeValue(t, slow.metrics.seriesDropped.WithLabelValues(reasonCardinality)); got != 8 {
		t.Fatalf("the guard dropped %v series, want 8", got)
	}
	expect("still over the guard's limit", scrape(many...), false)
	clock = clock.Add(time.Minute)
	expect("the next minute", scrape(many...), false)
	expect("all known the next minute", scrape(many...), true)
	clock = clock.Add(5 * time.Minute)
	expect("after the guard forgot the target", scrape(many...), false)
	expect("known again", scrape(many...), true)

	// Pods come and go: of the burst's output, with pods not in the
	// cache, only the node's series stays.
	expectChurn("known pods", scrape("web-5d9c-x1", "db-0"), 1)
	expectChurn("a pod added", scrape("web-5d9c-x1", "db-0", "web-5d9c-y2"), 5)
	expectChurn("a pod removed", scrape("db-0", "web-5d9c-y2"), 5)
	expectChurn("a pod replaced", scrape("db-0", "lonely-z"), 3)
	change(gvrPods, pod("shop", "db-0", map[string]string{"app": "db-v2"}, "StatefulSet", "db"), false)
	expectChurn("a pod read before changed", scrape("db-0", "lonely-z", "web-5d9c-x1"), 0)
	if got := labelOf(t, expect("after the change", scrape("db-0", "lonely-z"), false), "db-0", "app"); got != "db-v2" {
		t.Fatalf("app=%q after the pod change, want db-v2", got)
	}
}

// fastAndSlow are an enricher with the steady and churn paths and one
// with neither, on the metadata of cluster c1, with their workers.
type fastAndSlow struct {
	fast, slow             *Enricher
	fastWorker, slowWorker *worker
}

func newFastAndSlow(t *testing.T, cfg Config, now func() time.Time, c1 *clusterMeta) fastAndSlow {
	newEnricher := func(steady *steadyCache) (*Enricher, *worker) {
		e, _ := testEnricher(t, cfg, now)
		e.clusters = map[string]*clusterMeta{"c1": c1}
		e.maxChunk, e.steady = 1<<20, steady
		return e, &worker{join: testJoiner(), lb: newBuilder()}
	}
	var b fastAndSlow
	b.fast, b.fastWorker = newEnricher(newSteadyCache(steadyCacheBytes))
	b.slow, b.slowWorker = newEnricher(nil)
	return b
}

// same enriches in with both and fails unless they publish the same bytes
// and count the same. It returns the slow one's chunks.
func (b fastAndSlow) same(t *testing.T, what string, in input) []proto.Chunk {
	t.Helper()
	fast, slow := b.fast, b.slow
	want, wantSeries, err := slow.enrich(b.slowWorker, in)
	if err != nil {
		t.Fatal(err)
	}
	got, gotSeries, err := fast.enrich(b.fastWorker, in)
	if err != nil {
		t.Fatal(err)
	}
	if gotSeries != wantSeries || len(got) != len(want) {
		t.Fatalf("%s: %d series in %d chunks, want %d in %d", what, gotSeries, len(got), wantSeries, len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Payload, want[i].Payload) || got[i].Samples != want[i].Samples {
			t.Fatalf("%s: chunk %d differs from the slow path's", what, i)
		}
	}
	for _, m := range []struct {
		name       string
		fast, slow interface{ Write(*dto.Metric) error }
	}{
		{"pod_unknown", fast.metrics.podUnknown, slow.metrics.podUnknown},
		{"dropped relabel", fast.metrics.seriesDropped.WithLabelValues(reasonRelabel), slow.metrics.seriesDropped.WithLabelValues(reasonRelabel)},
		{"dropped cardinality", fast.metrics.seriesDropped.WithLabelValues(reasonCardinality), slow.metrics.seriesDropped.WithLabelValues(reasonCardinality)},
	} {
		if f, s := gaugeValue(t, m.fast), gaugeValue(t, m.slow); f != s {
			t.Fatalf("%s: %s %v, slow path %v", what, m.name, f, s)
		}
	}
	if fast.guard.size() != slow.guard.size() {
		t.Fatalf("%s: guard remembers %d series, slow path's %d", what, fast.guard.size(), slow.guard.size())
	}
	return want
}

// labelOf is the value of a label of the first series of a pod in a
// BlockZstd payload.
func labelOf(t *testing.T, payload []byte, pod, name string) string {
	t.Helper()
	var b proto.Batch
	if err := (proto.BlockZstd{}).Decode(payload, &b); err != nil {
		t.Fatal(err)
	}
	for _, s := range b.Series {
		if ls := labelMap(t, s.Labels); ls["pod"] == pod {
			return ls[name]
		}
	}
	t.Fatalf("no series of pod %s", pod)
	return ""
}

// The steady cache keeps the last outputs of each target and chunk, within
// its bound, and forgets those unused for a while.
func TestSteadyCacheBounds(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	out := func(sum uint64) *steadyOutput { return &steadyOutput{labelsSum: sum, labels: make([]byte, 1000)} }
	size := out(0).size()
	c := newSteadyCache(4*size + size/2)
	a, b := steadyKey{"weir.enriched.c1.a.cadvisor", 0}, steadyKey{"weir.enriched.c1.b.cadvisor", 0}

	c.put(a, out(1), now)
	if o := c.take(a, 1); o == nil || c.take(a, 1) != nil {
		t.Fatal("an output is taken once, until put back")
	}
	for sum := range uint64(3) {
		c.put(a, out(sum), now)
	}
	if c.take(a, 0) != nil || c.take(a, 1) == nil || c.take(a, 2) == nil {
		t.Errorf("a target keeps its last %d outputs", steadyPerTarget)
	}
	for sum := range uint64(2) {
		c.put(a, out(sum), now)
		c.put(b, out(sum), now)
	}
	c.put(steadyKey{a.out, 1}, out(7), now)
	if c.take(steadyKey{a.out, 1}, 7) != nil {
		t.Error("an output over the bound was kept")
	}
	if c.bytes != 4*size {
		t.Errorf("%d bytes counted, want %d", c.bytes, 4*size)
	}

	now = now.Add(steadyStale / 2)
	c.put(b, out(9), now)
	now = now.Add(steadyStale/2 + time.Minute)
	c.put(b, out(10), now)
	if c.take(a, 0) != nil || c.take(a, 1) != nil {
		t.Error("a stale target's outputs were kept")
	}
	if c.take(b, 9) == nil || c.take(b, 10) == nil {
		t.Error("a target in use lost its outputs")
	}
	if c.bytes != 0 {
		t.Errorf("%d bytes counted in an empty cache", c.bytes)
	}
}

// A target scraped twice through JetStream: the second scrape, in chunks
// as the first, reuses every chunk's labels; each input gets its enriched
// copy with its own id, the labels of the first and its own samples, and
// is acknowledged.
func TestSteadyTargetThroughJetStream(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	setupStreams(t, js)
	reg := startCaptureEnricher(t, js)

	capture := captureBatch(t, fixtures.Cadvisor135)
	subj := proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: "datagen-1-35", Source: proto.SourceCadvisor}
	scrapes := []int64{1_700_000_000_000, 1_700_000_015_000}
	var ids []string
	for n, millis := range scrapes {
		series := slices.Clone(capture.Series)
		for i := range series {
			series[i].Samples = []prompb.Sample{{Timestamp: millis, Value: float64(i)}}
		}
		ids = append(ids, publishScrape(t, js, subj, millis, series, 8<<10)...)
		eventually(t, "scrape enriched", func() bool { return streamMsgs(t, js, proto.StreamEnriched) == uint64(len(ids)) })
		if n == 0 && len(ids) < 2 {
			t.Fatalf("the scrape was sent in %d chunk, want several", len(ids))
		}
	}
	chunks := len(ids) / 2
	if got := metricValue(t, reg, "weir_enricher_messages_reused_total"); got != float64(chunks) {
		t.Errorf("weir_enricher_messages_reused_total = %v, want the %d chunks of the second scrape", got, chunks)
	}
	out := readStream(t, js, proto.StreamEnriched, true)
	for i, m := range out {
		if got := m.header.Get(proto.HeaderMsgID); got != ids[i] {
			t.Fatalf("enriched message %d has id %q, want %q", i, got, ids[i])
		}
	}
	for i, second := range out[chunks:] {
		first := out[i]
		if len(second.batch.Series) != len(first.batch.Series) {
			t.Fatalf("chunk %d: %d series, the first scrape's had %d", i, len(second.batch.Series), len(first.batch.Series))
		}
		for k, s := range second.batch.Series {
			if !slices.EqualFunc(s.Labels, first.batch.Series[k].Labels, func(a, b prompb.Label) bool { return a.Name == b.Name && a.Value == b.Value }) {
				t.Fatalf("chunk %d series %d: labels %v, first scrape's %v", i, k, s.Labels, first.batch.Series[k].Labels)
			}
			if s.Samples[0].Timestamp != scrapes[1] {
				t.Fatalf("chunk %d series %d: sample at %d, want the second scrape's", i, k, s.Samples[0].Timestamp)
			}
		}
	}
	waitInputAcked(t, js)
}

// TestChurnPathAsSlowPathOnCapture sends the real cAdvisor capture scrape
// after scrape with random pods gone and back, some of them unknown to the
// metadata, through an enricher with the steady and churn paths and one
// without: every output and counter must be the same, and the churn path
// must have made every output but the first and those past its limit of
// outputs in a row.
func TestChurnPathAsSlowPathOnCapture(t *testing.T) {
	capture := captureBatch(t, fixtures.Cadvisor135)
	known := captureMeta(t, capture)
	cfg := DefaultConfig()
	if err := yaml.Unmarshal([]byte(`
- source_labels: [__name__]
  regex: container_fs_.*
  action: drop
`), &cfg.RelabelConfigs); err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Unix(1_700_000_000, 0) }
	both := newFastAndSlow(t, cfg, now, known)
	fast, slow := both.fast, both.slow

	j := testJoiner()
	var pods []string
	for _, s := range capture.Series {
		if _, pod := j.plan(s.Labels).podOf(s.Labels); pod != "" && !slices.Contains(pods, pod) {
			pods = append(pods, pod)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var slowScrapes []int // the scrapes no series was reused for
	reusedBefore := 0.0
	h := nats.Header{}
	h.Set(proto.HeaderEncoding, proto.BlockZstd{}.Name())
	for step := range 40 {
		// A few pods gone this scrape, and from the tenth scrape on one pod
		// renamed to one the metadata does not know.
		gone := map[string]bool{}
		for range 3 {
			gone[pods[rng.IntN(len(pods))]] = true
		}
		renamed := pods[rng.IntN(len(pods))]
		var series []prompb.TimeSeries
		for _, s := range capture.Series {
			_, pod := j.plan(s.Labels).podOf(s.Labels)
			if gone[pod] {
				continue
			}
			s.Labels = slices.Clone(s.Labels)
			for k := range s.Labels {
				if step >= 10 && s.Labels[k].Name == "pod" && s.Labels[k].Value == renamed {
					s.Labels[k].Value += "-unknown"
				}
			}
			s.Samples = []prompb.Sample{{Timestamp: int64(step) * 15_000, Value: float64(step)}}
			series = append(series, s)
		}
		payload, err := proto.BlockZstd{}.Append(nil, &proto.Batch{Series: series})
		if err != nil {
			t.Fatal(err)
		}
		in, err := readInput("weir.raw.c1.datagen-1-35.cadvisor.0", h, payload)
		if err != nil {
			t.Fatal(err)
		}
		both.same(t, fmt.Sprint("scrape ", step), in)
		if reused := gaugeValue(t, fast.metrics.seriesReused); reused == reusedBefore {
			slowScrapes = append(slowScrapes, step)
		} else {
			reusedBefore = reused
		}
	}
	// The first scrape takes the slow path, and then every one after 16
	// outputs of the churn path in a row.
	if !slices.Equal(slowScrapes, []int{0, 17, 34}) {
		t.Fatalf("scrapes %v took the slow path, want 0, 17 and 34", slowScrapes)
	}
	if gaugeValue(t, slow.metrics.podUnknown) == 0 || gaugeValue(t, slow.metrics.seriesDropped.WithLabelValues(reasonRelabel)) == 0 {
		t.Fatal("the scrapes must name unknown pods and have series the rules drop")
	}
}

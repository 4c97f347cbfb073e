package enricher

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/prompb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/weirmetrics/weir/internal/cputime"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// captureMeta is metadata for every pod of the 1.35 cAdvisor capture, each
// owned through a ReplicaSet by a Deployment, on a node with labels.
func captureMeta(b testing.TB, capture proto.Batch) *clusterMeta {
	objs := []k8sruntime.Object{node("datagen-1-35", map[string]string{
		"topology.kubernetes.io/zone": "zone-b", "topology.kubernetes.io/region": "region-1",
		"node.kubernetes.io/instance-type": "e2-standard-4", "cloud.google.com/gke-nodepool": "pool-1"})}
	seen := map[string]bool{}
	j := testJoiner()
	for _, s := range capture.Series {
		ns, p := j.plan(s.Labels).podOf(s.Labels)
		if ns == "" || p == "" || seen[ns+"/"+p] {
			continue
		}
		seen[ns+"/"+p] = true
		objs = append(objs, replicaSet(ns, p+"-rs", "Deployment", p+"-deploy"),
			pod(ns, p, map[string]string{"app": p}, "ReplicaSet", p+"-rs"))
	}
	cfg := DefaultConfig()
	_, nodeKeys := compileRules(cfg.NodeLabels)
	_, podKeys := compileRules(cfg.PodLabels)
	c, err := newClusterMeta("c1", fakeClient(objs...), 0, nodeKeys, podKeys, newMetrics(nil, func() float64 { return 0 }))
	if err != nil {
		b.Fatal(err)
	}
	runMeta(b, context.Background(), c) // stopped by runMeta's cleanup
	return c
}

// BenchmarkJoin measures the join alone on the real 1.35 cAdvisor capture:
// cluster, node, node labels, pod labels and workload onto every series.
// The series are decoded from a payload, as the enricher's are, so that
// their labels lie in memory as in production: one sub-benchmark per
// encoding a stage can read, since each lays labels out differently
// (BlockZstd shares one string per symbol, prw1+snappy allocates each).
func BenchmarkJoin(b *testing.B) {
	parsed := captureBatch(b, fixtures.Cadvisor135)
	c := captureMeta(b, parsed)
	for _, enc := range []proto.Encoding{proto.BlockZstd{}, proto.SnappyPRW1{}} {
		b.Run(enc.Name(), func(b *testing.B) {
			payload, err := enc.Append(nil, &parsed)
			if err != nil {
				b.Fatal(err)
			}
			var capture proto.Batch
			if err := enc.Decode(payload, &capture); err != nil {
				b.Fatal(err)
			}
			benchmarkJoin(b, c, capture)
		})
	}
}

func benchmarkJoin(b *testing.B, c *clusterMeta, capture proto.Batch) {
	orig := make([][]prompb.Label, len(capture.Series))
	for i := range capture.Series {
		orig[i] = capture.Series[i].Labels
	}
	j := testJoiner()
	samples := capture.Samples()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cputime.Process()
	for b.Loop() {
		for i := range capture.Series {
			capture.Series[i].Labels = orig[i]
		}
		j.begin(c, "c1", "datagen-1-35")
		if st := j.enrich(c, &capture); st.unknownPods != 0 {
			b.Fatalf("%d series of unknown pods", st.unknownPods)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*samples), "ns/sample")
	// On a shared machine wall time counts the waits for a core; the
	// process's CPU time does not.
	b.ReportMetric(float64(cputime.Process()-cpu)/float64(b.N*samples), "cpu-ns/sample")
	b.ReportMetric(float64(samples*b.N)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkMessage is the whole path of one message without NATS: decode
// the payload, join, run the cardinality guard and encode the result. On
// the slow path every message is enriched from its labels; on the steady
// path the target sends the same series every time, as it mostly does, and
// the output reuses the label columns of the last one; on the miss path,
// the target's series are new every time (a cache that keeps nothing), and
// each message is enriched from its labels and remembered; on the churn
// path one of three pods is missing from each message, a different one
// from the last two (the steady cache keeps two outputs per target), and
// only the series of the pod back are enriched from their labels.
func BenchmarkMessage(b *testing.B) {
	capture := captureBatch(b, fixtures.Cadvisor135)
	c := captureMeta(b, capture)
	// Successive scrapes of the target: the same series, with samples that
	// move on.
	h := nats.Header{}
	h.Set(proto.HeaderEncoding, proto.DefaultEncoding.Name())
	j := testJoiner()
	var pods []string
	for _, s := range capture.Series {
		if _, pod := j.plan(s.Labels).podOf(s.Labels); pod != "" && !slices.Contains(pods, pod) {
			pods = append(pods, pod)
		}
	}
	// scrape makes the k-th scrape of series.
	scrape := func(k int, series []prompb.TimeSeries) input {
		next := proto.Batch{Series: slices.Clone(series)}
		for i, s := range next.Series {
			next.Series[i].Samples = []prompb.Sample{{Timestamp: s.Samples[0].Timestamp + int64(k)*15_000, Value: s.Samples[0].Value * (1 + float64(k)/1000)}}
		}
		payload, err := proto.DefaultEncoding.Append(nil, &next)
		if err != nil {
			b.Fatal(err)
		}
		in, err := readInput("weir.raw.c1.datagen-1-35.cadvisor", h, payload)
		if err != nil {
			b.Fatal(err)
		}
		return in
	}
	var scrapes, churn []input
	var churnSeries []int
	for k := range 9 {
		scrapes = append(scrapes, scrape(k, capture.Series))
		gone := pods[k%3]
		without := slices.DeleteFunc(slices.Clone(capture.Series), func(s prompb.TimeSeries) bool {
			_, pod := j.plan(s.Labels).podOf(s.Labels)
			return pod == gone
		})
		churn = append(churn, scrape(k, without))
		churnSeries = append(churnSeries, len(without))
	}
	samples := capture.Samples()
	for _, path := range []struct {
		name   string
		steady *steadyCache
	}{{"slow", nil}, {"miss", newSteadyCache(0)}, {"steady", newSteadyCache(steadyCacheBytes)}, {"churn", newSteadyCache(steadyCacheBytes)}} {
		b.Run(path.name, func(b *testing.B) {
			e := &Enricher{guard: newGuard(DefaultConfig().Cardinality, time.Now), clusters: map[string]*clusterMeta{"c1": c},
				metrics: newMetrics(nil, func() float64 { return 0 }), deadLog: throttle{every: 1}, maxChunk: 1 << 20, steady: path.steady}
			w := &worker{join: testJoiner()}
			b.SetBytes(int64(len(scrapes[0].data)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cputime.Process()
			for i := 0; b.Loop(); i++ {
				in, want := scrapes[i%len(scrapes)], len(capture.Series)
				if path.name == "churn" {
					in, want = churn[i%len(churn)], churnSeries[i%len(churn)]
				}
				if _, n, err := e.enrich(w, in); err != nil || n != want {
					b.Fatalf("%d series out of %d: %v", n, want, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*samples), "ns/sample")
			// On a shared machine wall time counts the waits for a core; the
			// process's CPU time does not.
			b.ReportMetric(float64(cputime.Process()-cpu)/float64(b.N*samples), "cpu-ns/sample")
			b.ReportMetric(float64(samples*b.N)/b.Elapsed().Seconds(), "samples/s")
			if path.name == "steady" {
				// What the steady cache holds for this one target.
				b.ReportMetric(float64(path.steady.bytes), "cached-bytes")
			}
		})
	}
}

// BenchmarkMetadataMemory feeds generated objects for 5,000 nodes, 150,000
// pods, 50,000 ReplicaSets and 5,000 Jobs, shaped like real ones (labels,
// a large last-applied annotation, managed fields, two owner references),
// through the transform into an informer's indexer, as the informers do,
// and reports the heap they hold after GC.
func BenchmarkMetadataMemory(b *testing.B) {
	const nodes, pods, replicaSets, jobs = 5000, 150_000, 50_000, 5000
	cfg := DefaultConfig()
	_, nodeKeys := compileRules(cfg.NodeLabels)
	_, podKeys := compileRules(cfg.PodLabels)
	annotation := strings.Repeat("x", 2048)
	for b.Loop() {
		before := heap()
		newStore := func() cache.Indexer {
			return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		}
		rv := 1_000_000
		stores := []cache.Indexer{newStore(), newStore(), newStore(), newStore()}
		add := func(s cache.Indexer, keep map[string]bool, o *metav1.PartialObjectMetadata) {
			rv++
			o.ResourceVersion = strconv.Itoa(rv)
			o.UID = "6f1c1b8e-2d3a-4c5b-9e8f-0a1b2c3d4e5f"
			o.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": annotation}
			out, err := strip(keep)(o)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Add(out); err != nil {
				b.Fatal(err)
			}
		}
		for i := range nodes {
			add(stores[0], nodeKeys, node(fmt.Sprintf("ip-10-%d-%d-%d.eu-west-1.compute.internal", i/65536, i/256%256, i%256), map[string]string{
				"topology.kubernetes.io/zone": "eu-west-1" + string(rune('a'+i%3)), "topology.kubernetes.io/region": "eu-west-1",
				"node.kubernetes.io/instance-type": "m5.2xlarge", "eks.amazonaws.com/nodegroup": fmt.Sprintf("ng-%d", i%20),
				"kubernetes.io/hostname": fmt.Sprint("host-", i), "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			}))
		}
		for i := range replicaSets {
			add(stores[2], nil, replicaSet(fmt.Sprintf("ns-%d", i%500), fmt.Sprintf("app-%d-7d9f8c6b5", i), "Deployment", fmt.Sprintf("app-%d", i)))
		}
		for i := range jobs {
			add(stores[3], nil, job(fmt.Sprintf("ns-%d", i%500), fmt.Sprintf("report-%d-2900", i), "CronJob", fmt.Sprintf("report-%d", i)))
		}
		for i := range pods {
			rs := i % replicaSets
			add(stores[1], podKeys, pod(fmt.Sprintf("ns-%d", rs%500), fmt.Sprintf("app-%d-7d9f8c6b5-%05x", rs, i), map[string]string{
				"app.kubernetes.io/name": fmt.Sprint("app-", rs), "app.kubernetes.io/instance": "prod", "pod-template-hash": "7d9f8c6b5",
				"team": "payments", "version": "v1.2.3",
			}, "ReplicaSet", fmt.Sprintf("app-%d-7d9f8c6b5", rs)))
		}
		after := heap()
		b.ReportMetric(float64(after-before)/(1<<20), "MiB")
		b.ReportMetric(float64(after-before)/float64(nodes+pods+replicaSets+jobs), "B/object")
		runtime.KeepAlive(stores)
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

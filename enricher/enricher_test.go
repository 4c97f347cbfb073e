package enricher

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

const testPartitions = 4

func setupStreams(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	cfg := proto.DefaultStreamsConfig()
	cfg.Partitions = testPartitions
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
}

// publishScrape publishes series as the collector does: chunks with Meta
// headers. It returns the message ids.
func publishScrape(t testing.TB, js jetstream.JetStream, subj proto.Subject, millis int64, series []prompb.TimeSeries, maxBytes int) []string {
	t.Helper()
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, series, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, c := range chunks {
		msg := nats.NewMsg(subj.String())
		msg.Data = c.Payload
		meta := proto.Meta{MsgID: proto.MsgID(subj, millis, i), Encoding: proto.DefaultEncoding.Name(),
			ScrapeMillis: millis, Chunk: i, Chunks: len(chunks), Samples: c.Samples}
		meta.SetHeaders(msg.Header)
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, meta.MsgID)
	}
	return ids
}

type stored struct {
	subject string
	header  nats.Header
	batch   proto.Batch
}

// readStream returns every message of a stream, in stream order, decoded
// when it is a data stream.
func readStream(t testing.TB, js jetstream.JetStream, name string, decode bool) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s seq %d: %v", name, seq, err)
		}
		s := stored{subject: m.Subject, header: m.Header}
		if decode {
			if err := proto.DefaultEncoding.Decode(m.Data, &s.batch); err != nil {
				t.Fatalf("%s seq %d: %v", name, seq, err)
			}
		}
		out = append(out, s)
	}
	return out
}

func streamMsgs(t testing.TB, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// startEnricher runs an enricher until the test ends (or stop is called).
func startEnricher(t *testing.T, cfg Config, d Deps) (stop func()) {
	t.Helper()
	if d.Partitions == 0 {
		d.Partitions = testPartitions
	}
	if d.Reg == nil {
		d.Reg = prometheus.NewRegistry()
	}
	e, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

func captureCluster() []runtime.Object {
	return []runtime.Object{
		node("datagen-1-35", map[string]string{"topology.kubernetes.io/zone": "zone-b", "cloud.google.com/gke-nodepool": "pool-1"}),
		replicaSet("kube-system", "coredns-7d764666f9", "Deployment", "coredns"),
		pod("kube-system", "coredns-7d764666f9-qdcxt", map[string]string{"app": "coredns"}, "ReplicaSet", "coredns-7d764666f9"),
		pod("kube-system", "kube-proxy-8k9zt", nil, "DaemonSet", "kube-proxy"),
		pod("scraper", "e2e-statefulset-0", nil, "StatefulSet", "e2e-statefulset"),
	}
}

// TestEnrichesRealCaptureThroughJetStream publishes the real 1.35 cAdvisor
// capture to WEIR_RAW for a cluster with metadata and for one without,
// plus a message that does not decode, and checks what reaches
// WEIR_ENRICHED and WEIR_DEAD, and that the input is acknowledged.
func TestEnrichesRealCaptureThroughJetStream(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	setupStreams(t, js)
	capture := captureBatch(t, fixtures.Cadvisor135)

	withMeta := proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: "datagen-1-35", Source: proto.SourceCadvisor}
	noMeta := proto.Subject{Stage: proto.StageRaw, Cluster: "edge", Node: "n.2", Source: proto.SourceCadvisor}
	ids := map[string]bool{}
	for _, id := range publishScrape(t, js, withMeta, 1_700_000_000_000, capture.Series, 128<<10) {
		ids[id] = true
	}
	for _, id := range publishScrape(t, js, noMeta, 1_700_000_000_000, capture.Series, 1<<20) {
		ids[id] = true
	}
	bad := nats.NewMsg("weir.raw.c1.datagen-1-35.kubelet")
	bad.Data = []byte("not snappy")
	proto.Meta{MsgID: "bad-1", Encoding: proto.DefaultEncoding.Name()}.SetHeaders(bad.Header)
	if _, err := js.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}

	reg := startCaptureEnricher(t, js)
	eventually(t, "every scrape enriched", func() bool { return streamMsgs(t, js, proto.StreamEnriched) == uint64(len(ids)) })
	eventually(t, "dead letter", func() bool { return streamMsgs(t, js, proto.StreamDead) == 1 })

	got := map[string]map[string]int{} // cluster -> series -> count
	workloads := map[string]string{}
	for _, m := range readStream(t, js, proto.StreamEnriched, true) {
		id := m.header.Get(proto.HeaderMsgID)
		if !ids[id] {
			t.Errorf("enriched message with id %q, not one of the inputs", id)
		}
		delete(ids, id)
		s, err := proto.ParseSubject(m.subject)
		if err != nil || s.Stage != proto.StageEnriched || s.Source != proto.SourceCadvisor {
			t.Fatalf("enriched subject %q: %v", m.subject, err)
		}
		if n, _ := strconv.Atoi(m.header.Get(proto.HeaderSamples)); n != m.batch.Samples() {
			t.Errorf("%s header says %d samples, payload has %d", id, n, m.batch.Samples())
		}
		if got[s.Cluster] == nil {
			got[s.Cluster] = map[string]int{}
		}
		for _, ser := range m.batch.Series {
			ls := labelMap(t, ser.Labels)
			if ls["cluster"] != s.Cluster || ls["node"] != s.Node {
				t.Fatalf("series %v in %s: wrong cluster or node", ls, m.subject)
			}
			if s.Cluster == "c1" && (ls["zone"] != "zone-b" || ls["nodegroup"] != "pool-1") {
				t.Fatalf("series %v lacks the node labels", ls)
			}
			if s.Cluster == "edge" && (ls["zone"] != "" || ls["workload"] != "") {
				t.Fatalf("cluster without credentials got metadata labels: %v", ls)
			}
			if ls["workload"] != "" {
				workloads[ls["pod"]] = ls["workload_kind"] + "/" + ls["workload"]
			}
			delete(ls, "cluster")
			delete(ls, "node")
			for _, k := range []string{"zone", "nodegroup", "workload", "workload_kind", "app"} {
				delete(ls, k)
			}
			got[s.Cluster][fmt.Sprint(ls)]++
		}
	}
	if len(ids) > 0 {
		t.Errorf("%d inputs never enriched: %v", len(ids), ids)
	}
	want := map[string]int{}
	for _, ser := range capture.Series {
		want[fmt.Sprint(labelMap(t, ser.Labels))]++
	}
	for _, cluster := range []string{"c1", "edge"} {
		if len(got[cluster]) != len(want) {
			t.Errorf("cluster %s: %d distinct series enriched, capture has %d", cluster, len(got[cluster]), len(want))
		}
		for k, n := range want {
			if got[cluster][k] != n {
				t.Errorf("cluster %s: series %s enriched %d times, want %d", cluster, k, got[cluster][k], n)
				break
			}
		}
	}
	wantWorkloads := map[string]string{
		"coredns-7d764666f9-qdcxt": "Deployment/coredns",
		"kube-proxy-8k9zt":         "DaemonSet/kube-proxy",
		"e2e-statefulset-0":        "StatefulSet/e2e-statefulset",
	}
	for p, w := range wantWorkloads {
		if workloads[p] != w {
			t.Errorf("pod %s: workload %q, want %q", p, workloads[p], w)
		}
	}
	if len(workloads) != len(wantWorkloads) {
		t.Errorf("workloads %v, want only %v", workloads, wantWorkloads)
	}

	dead := readStream(t, js, proto.StreamDead, false)
	if h := dead[0].header; dead[0].subject != proto.DeadSubject("enricher") ||
		!strings.Contains(h.Get(proto.HeaderError), "malformed") || !strings.HasPrefix(h.Get(proto.HeaderSubject), "weir.raw.c1.datagen-1-35.kubelet") {
		t.Errorf("dead letter %s with headers %v", dead[0].subject, h)
	}

	// Everything read was acknowledged: nothing pending on any partition.
	waitInputAcked(t, js)
	unknown := metricValue(t, reg, "weir_enricher_series_pod_unknown_total")
	if unknown == 0 {
		t.Error("pods of the capture missing from the cache were not counted")
	}
}

// A scrape that outgrows the message limit once enriched is split; every
// part has a stable id of its own and together they hold every series.
func TestEnrichedScrapeOverTheLimitIsSplit(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	setupStreams(t, js)
	capture := captureBatch(t, fixtures.Cadvisor135)
	subj := proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: "datagen-1-35", Source: proto.SourceCadvisor}
	ids := publishScrape(t, js, subj, 1_700_000_000_000, capture.Series, 4<<20)
	if len(ids) != 1 {
		t.Fatalf("capture published in %d messages, want 1", len(ids))
	}
	raw := readStream(t, js, proto.StreamRaw, false)
	st, _ := js.Stream(context.Background(), proto.StreamRaw)
	m, err := st.GetMsg(context.Background(), 1)
	if err != nil || len(raw) != 1 {
		t.Fatal(err)
	}
	limit := len(m.Data) // the enriched scrape is larger than the raw one
	startEnricher(t, DefaultConfig(), Deps{JS: js, Member: "a", MaxPayload: limit})
	eventually(t, "enriched parts", func() bool {
		msgs := readStream(t, js, proto.StreamEnriched, true)
		n := 0
		for _, m := range msgs {
			n += len(m.batch.Series)
		}
		return n == len(capture.Series)
	})
	msgs := readStream(t, js, proto.StreamEnriched, true)
	if len(msgs) < 2 {
		t.Fatalf("%d enriched messages, want the scrape split", len(msgs))
	}
	for i, m := range msgs {
		want := ids[0]
		if i > 0 {
			want = fmt.Sprintf("%s.part%d", ids[0], i)
		}
		if got := m.header.Get(proto.HeaderMsgID); got != want {
			t.Errorf("part %d: id %q, want %q", i, got, want)
		}
		if pin := m.header.Get("Nats-Pin-Id"); pin != "" {
			t.Errorf("part %d: carries the pin id %q the enricher's delivery had: its reader would pull with it", i, pin)
		}
	}
}

// Scrapes published without a message id, which the wire allows, are
// split into parts without ids: parts named after an empty id would be the
// same for every target, and JetStream would drop all but the first.
func TestSplitScrapesWithoutIDsKeepEveryPart(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	setupStreams(t, js)
	capture := captureBatch(t, fixtures.Cadvisor135)
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, capture.Series, 4<<20)
	if err != nil || len(chunks) != 1 {
		t.Fatalf("capture in %d chunks: %v", len(chunks), err)
	}
	for i, node := range []string{"node-a", "node-b"} {
		subj := proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: node, Source: proto.SourceCadvisor}
		msg := nats.NewMsg(subj.String())
		proto.Meta{Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: 1_700_000_000_000 + int64(i), Chunks: 1,
			Samples: chunks[0].Samples}.SetHeaders(msg.Header)
		msg.Header.Del(proto.HeaderMsgID)
		msg.Data = chunks[0].Payload
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	// The enriched scrape is larger than the raw one: each is split.
	startEnricher(t, DefaultConfig(), Deps{JS: js, Member: "a", MaxPayload: len(chunks[0].Payload)})
	waitInputAcked(t, js)
	msgs := readStream(t, js, proto.StreamEnriched, true)
	n := 0
	for _, m := range msgs {
		n += len(m.batch.Series)
		if id := m.header.Get(proto.HeaderMsgID); id != "" {
			t.Errorf("%s: id %q, want none", m.subject, id)
		}
	}
	if len(msgs) < 4 || n != 2*len(capture.Series) {
		t.Errorf("WEIR_ENRICHED holds %d series in %d messages, want %d split in at least 4", n, len(msgs), 2*len(capture.Series))
	}
}

// The cluster the enricher runs in is watched with the pod's service
// account unless listed; outside a pod, or without a token, it gets the
// cluster and node labels only and the enricher still starts.
func TestLocalClusterInCluster(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Run(t))
	newE := func(cfg Config) *Enricher {
		t.Helper()
		e, err := New(cfg, Deps{JS: js, Partitions: 1, LocalCluster: "home", Reg: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if e := newE(DefaultConfig()); len(e.clusters) != 0 {
		t.Errorf("outside a pod: clusters %v, want none", e.clusters)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "6443")
	_, tokenErr := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token")
	if _, ok := newE(DefaultConfig()).clusters["home"]; ok != (tokenErr == nil) {
		t.Errorf("in a pod (token present: %v): local cluster watched = %v", tokenErr == nil, ok)
	}
	off := DefaultConfig()
	off.LocalInCluster = false
	if e := newE(off); len(e.clusters) != 0 {
		t.Errorf("local_in_cluster false: clusters %v, want none", e.clusters)
	}
}

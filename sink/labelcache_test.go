package sink

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// buildDecoded returns the bodies of every request of payload in protocol
// p, as the sink built them before the label cache: decoded whole.
func buildDecoded(t *testing.T, payload []byte, limit int, p protocol) [][]byte {
	t.Helper()
	var batch proto.Batch
	if err := (proto.BlockZstd{}).Decode(payload, &batch); err != nil {
		t.Fatal(err)
	}
	w := requestBuilder{limit: limit, exemplars: true, histograms: true}
	return collectBodies(t, newEncoder(), p, func(send func(request) error) error { return w.build(&batch, send) })
}

func collectBodies(t *testing.T, e *encoder, p protocol, build func(func(request) error) error) [][]byte {
	t.Helper()
	var bodies [][]byte
	err := build(func(r request) error {
		body, err := e.encode(r, p)
		bodies = append(bodies, bytes.Clone(body))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return bodies
}

// A target's payloads sent with the labels of the last one are the same
// requests, byte for byte, as those decoded whole: with the same labels,
// other labels, fewer series, and back.
func TestCachedLabelsBuildTheSameRequests(t *testing.T) {
	cadvisor := captureSeries(t, fixtures.Cadvisor135, scrapeMillis)
	kubelet := captureSeries(t, fixtures.Kubelet121, scrapeMillis)

	relabelled := stamped(cadvisor, scrapeMillis+30_000)
	for i := range relabelled[:10] {
		ls := slices.Clone(relabelled[i].Labels)
		ls[len(ls)-1].Value += "-moved"
		relabelled[i].Labels = ls
	}
	// Values and timestamps that gogo protobuf writes in particular ways,
	// and a label with an empty value.
	odd := stamped(cadvisor, scrapeMillis+60_000)
	odd[0].Samples[0].Value = 0
	odd[1].Samples[0].Value = math.Copysign(0, -1)
	odd[2].Samples[0].Value = math.NaN()
	odd[3].Samples[0].Timestamp = 0
	odd[4].Samples[0].Timestamp = -1
	odd[5].Labels = append(slices.Clone(odd[5].Labels), prompb.Label{Name: "zz_empty", Value: ""})

	steps := []struct {
		name   string
		series []prompb.TimeSeries
	}{
		{"first", cadvisor},
		{"same labels", stamped(cadvisor, scrapeMillis+15_000)},
		{"other labels", relabelled},
		{"same again", stamped(relabelled, scrapeMillis+45_000)},
		{"pods came and went", fixtures.PodsReplaced(stamped(relabelled, scrapeMillis+47_000))},
		{"fewer series", stamped(cadvisor[:len(cadvisor)/3], scrapeMillis+50_000)},
		{"odd samples", odd},
		{"another scrape", kubelet},
		{"back", stamped(cadvisor, scrapeMillis+90_000)},
	}
	// The labels are read for the protocol the sink speaks, and a sink
	// falls back from 2.0 to 1.0 with requests under way: each request is
	// built in both protocols.
	for _, c := range []struct {
		limit int
		read  protocol
	}{
		{DefaultConfig().QueueConfig.MaxSamplesPerSend, protoV1},
		{DefaultConfig().QueueConfig.MaxSamplesPerSend, protoV2},
		{7, protoV1},
		{7, protoV2},
	} {
		limit := c.limit
		budget := new(atomic.Int64)
		budget.Store(maxCachedBytes)
		cache := newLabelCache(budget)
		var r proto.BlockReader
		w := requestBuilder{limit: limit, exemplars: true, histograms: true}
		e := newEncoder()
		key := targetKey{subject: "weir.route.r.c.n.cadvisor.0"}
		for _, step := range steps {
			payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: step.series})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Reset(payload); err != nil {
				t.Fatal(err)
			}
			l, err := cache.labels(key, &r, c.read, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []protocol{protoV2, protoV1} {
				want := buildDecoded(t, payload, limit, p)
				got := collectBodies(t, e, p, func(send func(request) error) error { return w.buildBlock(&r, l, send) })
				if len(got) != len(want) {
					t.Fatalf("limit %d, read for %s, %s, %s: %d requests, want %d", limit, c.read, step.name, p, len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("limit %d, read for %s, %s, %s: request %d differs from the decoded one", limit, c.read, step.name, p, i)
					}
				}
			}
		}
	}
}

func TestLabelCacheKeepsTheLabelsOfASteadyTarget(t *testing.T) {
	series := captureSeries(t, fixtures.Cadvisor135, scrapeMillis)
	budget := new(atomic.Int64)
	budget.Store(maxCachedBytes)
	cache := newLabelCache(budget)
	read := func(key targetKey, series []prompb.TimeSeries, p protocol, now time.Time) *seriesLabels {
		t.Helper()
		return readLabels(t, &cache, key, series, p, now)
	}
	charged := func() int64 {
		n := 0
		for _, l := range cache.targets {
			if l.charged != l.bytes() {
				t.Fatalf("entry of %d bytes charged %d", l.bytes(), l.charged)
			}
			n += l.charged
		}
		return int64(n)
	}
	steady, stopping := targetKey{subject: "a"}, targetKey{subject: "b"}
	now := time.Unix(1000, 0)
	first := read(steady, series, protoV2, now)
	read(stopping, series, protoV2, now)
	if len(cache.targets) != 2 || budget.Load() != maxCachedBytes-charged() {
		t.Fatalf("%d targets cached, budget left %d of %d", len(cache.targets), budget.Load(), maxCachedBytes)
	}
	symbols := first.seen.Symbols()
	if read(steady, stamped(series, scrapeMillis+15_000), protoV2, now) != first || &first.seen.Symbols()[0] != &symbols[0] {
		t.Fatal("the labels of a payload like the last were read again")
	}
	// A sink that fell back to 1.0 reads them once more, to marshal them.
	if l := read(steady, series, protoV1, now); l != first || !l.marshalled1() {
		t.Fatal("labels not marshalled for 1.0")
	}

	// stopping sends no more: its labels go within two sweeps.
	for range 2 {
		now = now.Add(sweepEvery)
		read(steady, stamped(series, scrapeMillis+15_000), protoV1, now)
	}
	if _, ok := cache.targets[stopping]; ok || len(cache.targets) != 1 {
		t.Fatalf("%d targets cached, want only the steady one", len(cache.targets))
	}
	if budget.Load() != maxCachedBytes-charged() {
		t.Fatalf("budget left %d, want %d", budget.Load(), maxCachedBytes-charged())
	}

	// A target that does not fit the budget is read every time, uncached,
	// and leaves the others alone.
	budget.Store(1000)
	big := targetKey{subject: "c"}
	if l := read(big, series, protoV1, now); l != &cache.uncached || l.len() != len(series) {
		t.Fatal("a target over the budget was cached")
	}
	if budget.Load() != 1000 || len(cache.targets) != 1 {
		t.Fatalf("budget left %d, want 1000 untouched", budget.Load())
	}
	if l := read(steady, stamped(series, scrapeMillis+30_000), protoV1, now); l != first || l.len() != len(series) {
		t.Fatal("the steady target lost its labels")
	}
}

// A target's scrapes reach the backend whole, each series with its own
// labels, whether the sink reads them from the last payload's, decodes
// them, or gets them in another encoding between two.
func TestSteadyTargetSendsEverySampleWithItsLabels(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	subj := subject("node-1", proto.SourceKubeProxy)
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	changed := stamped(series, scrapeMillis+45_000)
	changed[0].Labels = append(slices.Clone(changed[0].Labels), prompb.Label{Name: "zz_moved", Value: "yes"})
	scrapes := [][]prompb.TimeSeries{
		series,
		stamped(series, scrapeMillis+15_000),
		stamped(series, scrapeMillis+30_000), // in prw1+snappy
		stamped(series, scrapeMillis+40_000),
		changed,
		stamped(series[1:], scrapeMillis+60_000),
	}
	var seq uint64
	for i, scrape := range scrapes {
		millis := scrape[0].Samples[0].Timestamp
		if i != 2 {
			seq = env.publishScrape(t, subj, millis, scrape)
			continue
		}
		payload, err := (proto.SnappyPRW1{}).Append(nil, &proto.Batch{Series: scrape})
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(subj.String())
		proto.Meta{MsgID: proto.MsgID(subj, millis, 0), Encoding: proto.SnappyPRW1{}.Name(), ScrapeMillis: millis, Chunks: 1}.SetHeaders(m.Header)
		m.Data = payload
		seq = env.publish(t, m)
	}
	env.startSink(t, testConfig("steady", rc.url()))

	want := map[string]bool{}
	for _, scrape := range scrapes {
		for _, ts := range scrape {
			want[seriesKey(ts.Labels)+"@"+strconv.FormatInt(ts.Samples[0].Timestamp, 10)] = true
		}
	}
	rc.waitSamples(t, len(want), 10*time.Second)
	env.waitAcked(t, "steady", seq)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for key := range want {
		if !rc.accepted[key] {
			t.Fatalf("the backend did not get %s", key)
		}
	}
	for key, order := range rc.order {
		if !slices.IsSorted(order) {
			t.Errorf("%s: timestamps out of order: %v", key, order)
		}
	}
}

// resizablePool is a shard pool of one shard that may grow to maxShards,
// and a kube-proxy payload to fill its caches with.
func resizablePool(t *testing.T, maxShards int) (*shardPool, []byte) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.QueueConfig.MinShards, cfg.QueueConfig.MaxShards = 1, maxShards
	m, err := newMetrics(nil, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: captureSeries(t, fixtures.KubeProxy121, scrapeMillis)})
	if err != nil {
		t.Fatal(err)
	}
	return newShardPool(cfg, m), payload
}

// Shards taken out of use by resharding give their cached labels back.
func TestResizeEmptiesTheCachesOfIdleShards(t *testing.T) {
	pool, payload := resizablePool(t, 2)
	if !pool.resize(2) {
		t.Fatal("resize to 2 shards failed")
	}
	budget := pool.shards[1].cache.budget
	sh := pool.shards[1]
	if err := sh.reader.Reset(payload); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.cache.labels(targetKey{subject: "a"}, &sh.reader, protoV1, time.Now()); err != nil {
		t.Fatal(err)
	}
	if budget.Load() == maxCachedBytes {
		t.Fatal("nothing cached")
	}
	if !pool.resize(1) {
		t.Fatal("resize to 1 shard failed")
	}
	if len(sh.cache.targets) != 0 || budget.Load() != maxCachedBytes {
		t.Fatalf("shard out of use still caches %d targets, budget left %d of %d", len(sh.cache.targets), budget.Load(), maxCachedBytes)
	}
	pool.close()
}

// Resharding sends most targets to another shard, which reads their labels
// again: the shard they left gives back what they held at once, not a sweep
// later, and keeps the targets that stay.
func TestResizeForgetsTheTargetsThatMoved(t *testing.T) {
	pool, payload := resizablePool(t, 3)
	defer pool.close()
	sh := pool.shards[0]
	var keys []targetKey
	for i := range 12 {
		key := targetKey{subject: subject(fmt.Sprintf("node-%d", i), proto.SourceKubeProxy).String()}
		keys = append(keys, key)
		if err := sh.reader.Reset(payload); err != nil {
			t.Fatal(err)
		}
		if _, err := sh.cache.labels(key, &sh.reader, protoV1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	entry := sh.cache.targets[keys[0]].charged
	if !pool.resize(3) {
		t.Fatal("resize to 3 shards failed")
	}
	stayed := 0
	for _, key := range keys {
		_, cached := sh.cache.targets[key]
		if stays := shardFor(key.subject, 3) == 0; cached != stays {
			t.Errorf("%s: cached %v in shard 0 after the resize, goes to shard %d", key.subject, cached, shardFor(key.subject, 3))
		}
		if shardFor(key.subject, 3) == 0 {
			stayed++
		}
	}
	if stayed == 0 || stayed == len(keys) {
		t.Fatalf("%d of %d targets stay in shard 0: the test shows nothing", stayed, len(keys))
	}
	if left, want := sh.cache.budget.Load(), int64(maxCachedBytes-stayed*entry); left != want {
		t.Errorf("budget left %d, want %d: the moved targets' entries given back", left, want)
	}
}

// A target's entry holds buffers of its own size, whatever targets the
// shard filled before it, so that the budget counts what each needs.
func TestLabelCacheEntriesKeepTheirOwnSize(t *testing.T) {
	big := captureSeries(t, fixtures.Cadvisor135, scrapeMillis)
	small := big[:40]
	budget := new(atomic.Int64)
	budget.Store(maxCachedBytes)
	cache := newLabelCache(budget)
	read := func(key targetKey, series []prompb.TimeSeries) *seriesLabels {
		t.Helper()
		return readLabels(t, &cache, key, series, protoV1, time.Unix(0, 0))
	}
	// Pods come and go on both targets, in turn.
	var bigLabels, smallLabels *seriesLabels
	for _, series := range [][]prompb.TimeSeries{big, small, fixtures.PodsReplaced(big), fixtures.PodsReplaced(small)} {
		if len(series) > len(small)+1 {
			bigLabels = read(targetKey{subject: "big"}, series)
		} else {
			smallLabels = read(targetKey{subject: "small"}, series)
		}
	}
	if s, b := smallLabels.bytes(), bigLabels.bytes(); s*20 > b {
		t.Fatalf("the entry of %d series takes %d bytes, the one of %d series %d", smallLabels.len(), s, bigLabels.len(), b)
	}
}

// readLabels encodes series as a collector does and returns the labels
// cache gives for them as key's payload.
func readLabels(t *testing.T, cache *labelCache, key targetKey, series []prompb.TimeSeries, p protocol, now time.Time) *seriesLabels {
	t.Helper()
	payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: series})
	if err != nil {
		t.Fatal(err)
	}
	var r proto.BlockReader
	if err := r.Reset(payload); err != nil {
		t.Fatal(err)
	}
	l, err := cache.labels(key, &r, p, now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLabelCacheSize: the targets that fit in label_cache_size are kept,
// the one that does not is sent all the same, read whole every time, and
// the metrics say so.
func TestLabelCacheSize(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	small := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	big := captureSeries(t, fixtures.Cadvisor135, scrapeMillis) // marshalled for 1.0: about 2 MiB
	cfg := testConfig("cache", rc.url())
	cfg.LabelCacheSize = 1 << 20
	const scrapes = 3
	var last uint64
	for i := range scrapes {
		millis := scrapeMillis + int64(i)*15_000
		env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), millis, stamped(small, millis))
		last = env.publishScrape(t, subject("node-1", proto.SourceCadvisor), millis, stamped(big, millis))
	}
	s, _ := env.startSink(t, cfg)
	rc.waitSamples(t, scrapes*(uniqueKeys(small)+uniqueKeys(big)), 20*time.Second)
	env.waitAcked(t, "cache", last)

	if got := metricValue(t, s.metrics.labelCacheUncached); got != scrapes {
		t.Errorf("weir_sink_label_cache_uncached_payloads_total = %v, want %d: every payload of the target that does not fit", got, scrapes)
	}
	if got := metricValue(t, s.metrics.labelCacheBytes); got <= 0 || got > float64(cfg.LabelCacheSize) {
		t.Errorf("weir_sink_label_cache_bytes = %v, want the small target's labels, within %d", got, cfg.LabelCacheSize)
	}
}

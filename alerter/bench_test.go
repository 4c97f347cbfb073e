package alerter

import (
	"bufio"
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// captureSeries reads a text exposition capture into series labeled as
// the collector labels a kubelet scrape.
func captureSeries(tb testing.TB, name, metricsPath string) []prompb.TimeSeries {
	tb.Helper()
	var out []prompb.TimeSeries
	sc := bufio.NewScanner(bytes.NewReader(fixtures.Read(name)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line[strings.LastIndexAny(line, "}")+1:])
		series := line[:strings.LastIndexAny(line, "}")+1]
		if series == "" {
			f := strings.Fields(line)
			series, fields = f[0], f[1:]
		}
		lset, err := promParser.ParseMetric(series)
		if err != nil {
			tb.Fatalf("%s: %q: %v", name, line, err)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			tb.Fatalf("%s: %q: %v", name, line, err)
		}
		b := labels.NewBuilder(lset).Set("job", "kubelet").Set("instance", "10.0.0.1:10250").Set("metrics_path", metricsPath)
		var pl []prompb.Label
		b.Labels().Range(func(l labels.Label) { pl = append(pl, prompb.Label{Name: l.Name, Value: l.Value}) })
		out = append(out, prompb.TimeSeries{Labels: pl, Samples: []prompb.Sample{{Value: v}}})
	}
	return out
}

// userRules are 50 rules of the kinds users write over cAdvisor series.
func userRules(n int) string {
	var b strings.Builder
	b.WriteString("groups:\n  - name: user\n    rules:\n")
	kinds := []string{
		"sum_by(rate(series(\"container_cpu_usage_seconds_total\", `container!=\"\"`), \"5m\"), \"namespace\", \"pod\") > %d",
		"max_by(series(\"container_memory_working_set_bytes\", `container!=\"\"`), \"namespace\", \"pod\") > %d000000000",
		"increase(series(\"container_network_receive_errors_total\"), \"10m\") > %d",
		"rate(series(\"container_network_transmit_packets_dropped_total\"), \"5m\") > %d",
		"series(\"container_memory_working_set_bytes\", `container!=\"\"`) / (series(\"container_spec_memory_limit_bytes\", `container!=\"\"`) > 0) > 0.9%d",
		"avg_over_time(series(\"container_threads\", `container!=\"\"`), \"10m\") > %d00",
		"sum_by(rate(series(\"container_pressure_cpu_waiting_seconds_total\"), \"5m\"), \"node\") > %d0",
		"changes(series(\"container_start_time_seconds\", `container!=\"\"`), \"15m\") > %d",
		"sum_by(series(\"container_tasks_state\", `state=\"uninterruptible\"`), \"node\") > %d0",
		"max_over_time(series(\"container_memory_failures_total\", `failure_type=\"pgmajfault\"`), \"5m\") > %d000000",
	}
	// A matcher that holds for every series makes each rule's selection
	// its own, so no two rules share a computation: the worst case for the
	// evaluation's memo.
	own := regexp.MustCompile(`series\("([a-z_]+)"`)
	for i := range n {
		e := fmt.Sprintf(kinds[i%len(kinds)], i+1)
		e = own.ReplaceAllString(e, "series(\"$1\", `pod!=\"bench-"+strconv.Itoa(i)+"\"`")
		fmt.Fprintf(&b, "      - alert: User%d\n        expr: '%s'\n        for: 5m\n", i, strings.ReplaceAll(e, "'", "''"))
	}
	return b.String()
}

// loadPackAndUserRules loads the default rule pack and n user rules.
func loadPackAndUserRules(tb testing.TB, n int) *RuleSet {
	tb.Helper()
	pack, _ := filepath.Glob("rules/*.yaml")
	var files []string
	for _, f := range pack {
		if !strings.HasSuffix(f, "_test.yaml") {
			files = append(files, f)
		}
	}
	files = append(files, writeFile(tb, tb.TempDir(), "user.yaml", userRules(n)))
	rs, err := LoadRules(files, 30*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}

// BenchmarkIngestAndEvaluate: the default pack and 50 user rules; every
// iteration is one cAdvisor scrape of one of ten nodes (decode and ingest),
// and every 20 scrapes (two rounds at 15s) all groups are evaluated once.
func BenchmarkIngestAndEvaluate(b *testing.B) {
	// Both encodings take their fast path, as the alerter's consumer does:
	// only the series of selected metric names are decoded, and of
	// BlockZstd not even their labels once a target sent the same series
	// before, as every node does here after its first scrape.
	for _, enc := range []proto.Encoding{proto.SnappyPRW1{}, proto.DefaultEncoding} {
		b.Run(enc.Name(), func(b *testing.B) { benchIngestAndEvaluate(b, enc) })
	}
}

func benchIngestAndEvaluate(b *testing.B, enc proto.Encoding) {
	rs := loadPackAndUserRules(b, 50)
	nodeNames := make([]string, 10)
	for i := range nodeNames {
		nodeNames[i] = fmt.Sprintf("node-%d", i)
	}
	store := newStore(rs.sels, (30 * time.Second).Milliseconds(), (5 * time.Minute).Milliseconds())
	series := captureSeries(b, fixtures.Cadvisor135, "/metrics/cadvisor")
	const nodes = 10
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// One payload per round of scrapes, 15s apart, counters growing, as
	// successive scrapes; encoded with the timer stopped.
	var payload []byte
	var bufs decodeBuffers
	// Usage counters grow; error and event counters stay flat, as in a
	// healthy cluster: alerts are the exception.
	grows := make([]bool, len(series))
	for j, s := range series {
		name := metricName(s.Labels)
		grows[j] = strings.HasSuffix(name, "_seconds_total") || strings.HasSuffix(name, "_bytes_total") || strings.HasSuffix(name, "packets_total")
	}
	encode := func(round int) {
		for j := range series {
			series[j].Samples[0].Timestamp = start.UnixMilli() + int64(round)*15000
			if grows[j] {
				series[j].Samples[0].Value += float64(j % 3)
			}
		}
		p, err := enc.Append(payload[:0], &proto.Batch{Series: series})
		if err != nil {
			b.Fatal(err)
		}
		payload = p
	}
	var cpu time.Duration
	step := func(i int) {
		if i%nodes == 0 {
			b.StopTimer()
			encode(i / nodes)
			b.StartTimer()
		}
		t0 := threadCPU()
		defer func() { cpu += threadCPU() - t0 }()
		t := Target{Cluster: "c1", Node: nodeNames[i%nodes], Source: proto.SourceCadvisor}
		if _, err := store.ingestPayload(t, enc.Name(), payload, &bufs); err != nil {
			b.Fatal(err)
		}
		if i%(2*nodes) == 2*nodes-1 {
			ts := start.Add(time.Duration(i/nodes) * 15 * time.Second)
			for _, g := range rs.Groups {
				if _, errs := g.Eval(store, ts); len(errs) > 0 {
					b.Fatal(errs)
				}
			}
		}
	}
	// Fill the windows first: the steady state is what runs for months.
	warm := 40 * nodes
	for i := range warm {
		step(i)
	}
	// The machine is shared: wall time per sample says more about the
	// neighbours than about the alerter, so CPU time of this thread is
	// reported too (the goroutine is locked to it).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu = 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		step(warm + i)
	}
	b.StopTimer()
	perSample := float64(b.Elapsed().Nanoseconds()) / float64(b.N*len(series))
	b.ReportMetric(perSample, "ns/sample")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(series)), "cpu-ns/sample")
	b.ReportMetric(float64(b.N*len(series))/b.Elapsed().Seconds(), "samples/s")
	sel, held := store.selected()
	b.ReportMetric(float64(sel), "selected-series")
	b.ReportMetric(float64(len(series)*nodes), "all-series")
	b.ReportMetric(float64(held), "held-samples")
	alerts := 0
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			alerts += len(r.active)
		}
	}
	b.ReportMetric(float64(alerts), "alerts")
}

// threadCPU is the CPU time (user and system) of the calling thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

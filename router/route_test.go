package router

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// compileForTest validates and compiles routes as New does, without NATS.
func compileForTest(t testing.TB, routes ...Route) *router {
	t.Helper()
	if err := ValidateRoutes(routes); err != nil {
		t.Fatal(err)
	}
	compiled := make([]*route, len(routes))
	for i, r := range routes {
		c, err := compileRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		compiled[i] = c
	}
	return newRouter(compiled)
}

// routeOne applies one route to series and returns what it keeps.
func routeOne(t testing.TB, r Route, subj proto.Subject, series []prompb.TimeSeries) ([]prompb.TimeSeries, routeCounts) {
	t.Helper()
	rt := compileForTest(t, r)
	b := proto.Batch{Series: series}
	rt.route(subj, &b)
	return slices.Clone(rt.out[0]), rt.counts[0]
}

// want filters series with a predicate written in Go, independently of
// the router, over a map of the labels.
func want(series []prompb.TimeSeries, keep func(ls map[string]string) bool) []prompb.TimeSeries {
	var out []prompb.TimeSeries
	for _, s := range series {
		m := map[string]string{}
		for _, l := range s.Labels {
			m[l.Name] = l.Value
		}
		if keep(m) {
			out = append(out, s)
		}
	}
	return out
}

// checkKept compares the series a route kept with the expectation, and
// makes sure the expectation is neither empty nor everything, so that a
// route that keeps all or nothing cannot pass. Every drop must be counted
// under reason.
func checkKept(t *testing.T, all, got, want []prompb.TimeSeries, c routeCounts, reason int) {
	t.Helper()
	if len(want) == 0 || len(want) == len(all) {
		t.Fatalf("bad test: expectation keeps %d of %d series", len(want), len(all))
	}
	if g, w := seriesKeys(got), seriesKeys(want); !slices.Equal(g, w) {
		t.Errorf("kept %d series, want %d; first differences: %v", len(g), len(w), firstDiff(g, w))
	}
	dropped := 0
	for _, d := range c.seriesDropped {
		dropped += d
	}
	if c.seriesIn != len(all) || c.seriesKept != len(want) || dropped != len(all)-len(want) || c.seriesDropped[reason] != dropped {
		t.Errorf("counts in=%d kept=%d dropped=%d (%d for %s), want %d, %d, %d", c.seriesIn, c.seriesKept, dropped,
			c.seriesDropped[reason], dropReasons[reason], len(all), len(want), len(all)-len(want))
	}
}

func firstDiff(got, want []string) []string {
	var out []string
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok && len(out) < 3 {
			out = append(out, "extra "+g)
		}
	}
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok && len(out) < 6 {
			out = append(out, "missing "+w)
		}
	}
	return out
}

func TestSelectors(t *testing.T) {
	all := captureSeries(t, fixtures.Cadvisor135, 1000, "job", "kubelet")
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	for _, tc := range []struct {
		name  string
		match []string
		keep  func(ls map[string]string) bool
	}{
		{"name regex", []string{`{__name__=~"container_.*"}`}, func(ls map[string]string) bool {
			return strings.HasPrefix(ls["__name__"], "container_")
		}},
		{"metric name with matchers, AND", []string{`container_memory_working_set_bytes{namespace="kube-system",container!=""}`}, func(ls map[string]string) bool {
			return ls["__name__"] == "container_memory_working_set_bytes" && ls["namespace"] == "kube-system" && ls["container"] != ""
		}},
		{"selectors are OR-ed", []string{`{__name__="machine_cpu_cores"}`, `{__name__=~"container_fs_.*",namespace!~"kube-.*"}`}, func(ls map[string]string) bool {
			return ls["__name__"] == "machine_cpu_cores" ||
				(strings.HasPrefix(ls["__name__"], "container_fs_") && !strings.HasPrefix(ls["namespace"], "kube-"))
		}},
		{"missing label matches empty", []string{`{__name__=~"container_cpu.*",pod=""}`}, func(ls map[string]string) bool {
			return strings.HasPrefix(ls["__name__"], "container_cpu") && ls["pod"] == ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, c := routeOne(t, Route{Name: "r", Match: tc.match}, subj, all)
			checkKept(t, all, got, want(all, tc.keep), c, dropMatch)
		})
	}
	t.Run("no selector keeps everything", func(t *testing.T) {
		got, c := routeOne(t, Route{Name: "r"}, subj, all)
		if len(got) != len(all) || c.seriesKept != len(all) || c.samplesKept != len(all) {
			t.Errorf("kept %d series (%d counted, %d samples) of %d", len(got), c.seriesKept, c.samplesKept, len(all))
		}
		for i := range got {
			if &got[i].Labels[0] != &all[i].Labels[0] {
				t.Fatal("a route without relabeling copied the labels; it should share them")
			}
		}
	})
}

func TestExpr(t *testing.T) {
	all := captureSeries(t, fixtures.Cadvisor135, 1000, "job", "kubelet")
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	for _, tc := range []struct {
		name, expr string
		keep       func(ls map[string]string) bool
	}{
		{"label helper and name", `label("namespace") == "kube-system" && name startsWith "container_memory"`, func(ls map[string]string) bool {
			return ls["namespace"] == "kube-system" && strings.HasPrefix(ls["__name__"], "container_memory")
		}},
		{"in and map access", `"pod" in labels && labels.container != "" && labels.namespace matches "^kube-"`, func(ls map[string]string) bool {
			_, ok := ls["pod"]
			return ok && ls["container"] != "" && strings.HasPrefix(ls["namespace"], "kube-")
		}},
		{"scrape identity", `source == "cadvisor" && cluster == "test" && node == "node-a" && name endsWith "_total"`, func(ls map[string]string) bool {
			return strings.HasSuffix(ls["__name__"], "_total")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, c := routeOne(t, Route{Name: "r", Expr: tc.expr}, subj, all)
			checkKept(t, all, got, want(all, tc.keep), c, dropExpr)
		})
	}
	t.Run("other node", func(t *testing.T) {
		got, c := routeOne(t, Route{Name: "r", Expr: `node == "node-b"`}, subj, all)
		if len(got) != 0 || c.seriesDropped[dropExpr] != len(all) {
			t.Errorf("kept %d series of another node", len(got))
		}
	})
	t.Run("runtime error drops the series and is counted", func(t *testing.T) {
		// int("") fails: series without a cpu label, or with "total".
		r := Route{Name: "r", Match: []string{`{__name__="container_cpu_usage_seconds_total"}`}, Expr: `int(label("id") == "/" ? "1" : "x") > 0`}
		rt := compileForTest(t, r)
		b := proto.Batch{Series: all}
		rt.route(subj, &b)
		c := rt.counts[0]
		wantKept := want(all, func(ls map[string]string) bool {
			return ls["__name__"] == "container_cpu_usage_seconds_total" && ls["id"] == "/"
		})
		if len(wantKept) == 0 {
			t.Fatal("bad test: capture has no root cgroup cpu series")
		}
		if c.seriesKept != len(wantKept) || c.seriesDropped[dropExprError] == 0 || len(rt.exprErrors) == 0 {
			t.Errorf("kept %d (want %d), expr errors counted %d, kept for the log %d", c.seriesKept, len(wantKept), c.seriesDropped[dropExprError], len(rt.exprErrors))
		}
		if len(rt.exprErrors) > maxExprErrors {
			t.Errorf("kept %d errors for the log, at most %d", len(rt.exprErrors), maxExprErrors)
		}
	})
}

func TestWriteRelabelConfigs(t *testing.T) {
	all := captureSeries(t, fixtures.Kubelet121, 1000, "job", "kubelet")
	subj := enrichedSubject("node-a", proto.SourceKubelet)
	r := Route{Name: "r", WriteRelabelConfigs: []*relabel.Config{
		{SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp(".*_bucket"), Action: relabel.Drop, Separator: ";", Replacement: "$1"},
		{Regex: relabel.MustNewRegexp("le|quantile"), Action: relabel.LabelDrop, Separator: ";", Replacement: "$1"},
		{TargetLabel: "backend", Replacement: "vm", Regex: relabel.MustNewRegexp("(.*)"), Action: relabel.Replace, Separator: ";"},
	}}
	got, c := routeOne(t, r, subj, all)
	wantSeries := want(all, func(ls map[string]string) bool { return !strings.HasSuffix(ls["__name__"], "_bucket") })
	if c.seriesKept != len(wantSeries) || c.seriesDropped[dropRelabel] != len(all)-len(wantSeries) {
		t.Errorf("kept %d, dropped by relabel %d; want %d and %d", c.seriesKept, c.seriesDropped[dropRelabel], len(wantSeries), len(all)-len(wantSeries))
	}
	if len(wantSeries) == len(all) {
		t.Fatal("bad test: the capture has no _bucket series")
	}
	for i, s := range got {
		ls := toLabels(s.Labels)
		if ls.Get("backend") != "vm" || ls.Has("quantile") || strings.HasSuffix(ls.Get("__name__"), "_bucket") {
			t.Fatalf("series %d: %s: want backend=\"vm\", no quantile, no _bucket", i, ls)
		}
		if !slices.IsSortedFunc(s.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("series %d: labels not sorted: %v", i, s.Labels)
		}
		// Same samples as the input series with the same labels but
		// backend and quantile.
		orig := toLabels(wantSeries[i].Labels)
		if orig.DropMetricName().Get("job") != "kubelet" || math.Float64bits(s.Samples[0].Value) != math.Float64bits(wantSeries[i].Samples[0].Value) {
			t.Fatalf("series %d: %s has sample %v, input %s had %v", i, ls, s.Samples, orig, wantSeries[i].Samples)
		}
	}

	t.Run("labeldrop of everything drops the series", func(t *testing.T) {
		r := Route{Name: "r", WriteRelabelConfigs: []*relabel.Config{
			{Regex: relabel.MustNewRegexp(".*"), Action: relabel.LabelDrop, Separator: ";", Replacement: "$1"},
		}}
		got, c := routeOne(t, r, subj, all)
		if len(got) != 0 || c.seriesDropped[dropRelabel] != len(all) {
			t.Errorf("kept %d series without labels", len(got))
		}
	})
}

func TestRoutesAreIndependent(t *testing.T) {
	all := captureSeries(t, fixtures.Cadvisor135, 1000, "job", "kubelet")
	rt := compileForTest(t,
		Route{Name: "containers", Match: []string{`{__name__=~"container_.*"}`}},
		Route{Name: "nothing", Match: []string{`{__name__="does_not_exist"}`}},
		Route{Name: "all"},
	)
	b := proto.Batch{Series: all}
	rt.route(enrichedSubject("n", proto.SourceCadvisor), &b)
	containers := want(all, func(ls map[string]string) bool { return strings.HasPrefix(ls["__name__"], "container_") })
	if got := len(rt.out[0]); got != len(containers) {
		t.Errorf("containers kept %d, want %d", got, len(containers))
	}
	if got := len(rt.out[1]); got != 0 {
		t.Errorf("nothing kept %d", got)
	}
	if got := len(rt.out[2]); got != len(all) {
		t.Errorf("all kept %d of %d", got, len(all))
	}
}

// TestRelabelMatchesPrometheus checks the router's relabeling against
// Prometheus' own relabel.Process, series by series over the real
// captures, for every action and for mixes of them: the fast paths
// (FastRegexMatcher, no labels.Builder) must not change a single label.
func TestRelabelMatchesPrometheus(t *testing.T) {
	all := slices.Concat(
		captureSeries(t, fixtures.Cadvisor135, 1000, "job", "kubelet"),
		captureSeries(t, fixtures.Kubelet121, 1000, "job", "kubelet"),
		captureSeries(t, fixtures.Probes, 1000, "job", "kubelet"),
	)
	rc := func(action relabel.Action, regex string, src ...model.LabelName) *relabel.Config {
		c := relabel.DefaultRelabelConfig
		c.Action, c.Regex, c.SourceLabels = action, relabel.MustNewRegexp(regex), src
		return &c
	}
	replace := rc(relabel.Replace, "(.+);(.+)", "namespace", "pod")
	replace.TargetLabel, replace.Replacement = "workload", "$1/$2"
	hash := rc(relabel.HashMod, ".*", "__name__")
	hash.TargetLabel, hash.Modulus = "shard", 4
	for _, tc := range []struct {
		name string
		cfgs []*relabel.Config
	}{
		{"drop suffix", []*relabel.Config{rc(relabel.Drop, ".*_bucket", "__name__")}},
		{"keep prefix", []*relabel.Config{rc(relabel.Keep, "container_(cpu|memory)_.*", "__name__")}},
		{"keep set on two labels", []*relabel.Config{rc(relabel.Keep, "(kube-system|scraper);.+", "namespace", "container")}},
		{"keep missing label matches empty", []*relabel.Config{rc(relabel.Keep, "", "pod")}},
		{"drop contains", []*relabel.Config{rc(relabel.Drop, ".*seconds.*", "__name__")}},
		{"labeldrop", []*relabel.Config{rc(relabel.LabelDrop, "id|image|name")}},
		{"labelkeep", []*relabel.Config{rc(relabel.LabelKeep, "__name__|job|namespace|pod|le")}},
		{"labeldrop everything", []*relabel.Config{rc(relabel.LabelDrop, ".*")}},
		{"direct chain", []*relabel.Config{rc(relabel.Drop, ".*_bucket", "__name__"), rc(relabel.LabelDrop, "id|image"), rc(relabel.Keep, "kube-.*|", "namespace")}},
		{"mixed chain", []*relabel.Config{rc(relabel.LabelDrop, "id"), replace, rc(relabel.Keep, ".+/.+", "workload"), hash, rc(relabel.Drop, "0", "shard")}},
		{"labelmap and lowercase", []*relabel.Config{
			func() *relabel.Config {
				c := rc(relabel.LabelMap, "(name|image)")
				c.Replacement = "container_$1"
				return c
			}(),
			func() *relabel.Config {
				c := rc(relabel.Lowercase, "", "device")
				c.TargetLabel = "device_lower"
				return c
			}(),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, c := routeOne(t, Route{Name: "r", WriteRelabelConfigs: tc.cfgs}, enrichedSubject("n", proto.SourceCadvisor), all)
			var want []string
			for _, s := range all {
				lb := labels.NewBuilder(toLabels(s.Labels))
				if keep := relabel.ProcessBuilder(lb, tc.cfgs...); keep && !lb.Labels().IsEmpty() {
					want = append(want, lb.Labels().String())
				}
			}
			gotKeys := make([]string, len(got))
			for i, s := range got {
				gotKeys[i] = toLabels(s.Labels).String()
			}
			if !slices.Equal(gotKeys, want) {
				t.Fatalf("router kept %d series, Prometheus %d; first differences: %v", len(gotKeys), len(want), firstDiff(sorted(gotKeys), sorted(want)))
			}
			if c.seriesKept != len(want) || c.seriesDropped[dropRelabel] != len(all)-len(want) {
				t.Errorf("counted kept %d dropped %d, want %d and %d", c.seriesKept, c.seriesDropped[dropRelabel], len(want), len(all)-len(want))
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

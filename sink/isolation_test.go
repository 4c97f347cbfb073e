package sink

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// outageReceiver is a remote-write backend that keeps only what the
// outage scenario measures: when each scrape (by timestamp) first arrived
// complete, how many samples it took, and whether any series went back in
// time. While down reports true it answers 503.
type outageReceiver struct {
	srv  *httptest.Server
	down atomic.Bool

	mu         sync.Mutex
	samples    map[int64]int       // samples accepted per scrape timestamp
	arrived    map[int64]time.Time // when the last sample of a scrape arrived
	last       map[string]int64    // newest timestamp per series
	outOfOrder int
	duplicates int
	total      int
	rejected   int
}

func newOutageReceiver(t testing.TB) *outageReceiver {
	rc := &outageReceiver{samples: map[int64]int{}, arrived: map[int64]time.Time{}, last: map[string]int64{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *outageReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if rc.down.Load() {
		rc.mu.Lock()
		rc.rejected++
		rc.mu.Unlock()
		http.Error(w, "backend down for the test", http.StatusServiceUnavailable)
		return
	}
	raw, err := snappy.Decode(nil, body)
	var wr prompb.WriteRequest
	if err == nil {
		err = wr.Unmarshal(raw)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, ts := range wr.Timeseries {
		key := seriesKey(ts.Labels)
		for _, s := range ts.Samples {
			if prev, ok := rc.last[key]; ok && s.Timestamp < prev {
				rc.outOfOrder++ // what Prometheus rejects as out of order
				continue
			} else if ok && s.Timestamp == prev {
				// A request sent again after a timeout whose answer was
				// lost: Prometheus takes the same sample twice silently.
				rc.duplicates++
				continue
			}
			rc.last[key] = s.Timestamp
			rc.samples[s.Timestamp]++
			rc.arrived[s.Timestamp] = now
			rc.total++
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *outageReceiver) url() string { return rc.srv.URL + "/api/v1/write" }

// outageRun is one run of the scenario: three routes, each with its own
// sink and backend; the third backend answers 503 for outage, then
// recovers. Every interval each of nodes targets publishes one scrape of
// the kube-proxy capture to every route.
type outageRun struct {
	nodes    int
	interval time.Duration
	before   time.Duration // publishing before the outage
	outage   time.Duration
	after    time.Duration // publishing after it
}

// routeResult is what one route's backend saw.
type routeResult struct {
	route        string
	samples      int
	want         int
	outOfOrder   int
	duplicates   int
	latOutage    []time.Duration // per scrape published during the outage: publish to complete arrival
	latOther     []time.Duration
	caughtUp     time.Duration // from recovery to the last scrape complete (down route)
	rejected     int
	samplesPerS  float64 // accepted during the outage window
	missingScrap int
}

func (o outageRun) run(t *testing.T) []routeResult {
	env := newEnv(t)
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	routes := []string{"healthy-a", "healthy-b", "down"}
	recv := map[string]*outageReceiver{}
	sinks := map[string]*Sink{}
	streams := proto.DefaultStreamsConfig()
	streams.MaxBytes = 1 << 30 // the test server's store has less than the default 10 GiB
	for _, route := range routes {
		if _, err := env.js.CreateStream(context.Background(), streams.RouteStream(route)); err != nil {
			t.Fatal(err)
		}
		recv[route] = newOutageReceiver(t)
		cfg := testConfig(route, recv[route].url())
		cfg.QueueConfig.MaxBackoff = time.Second
		cfg.RemoteTimeout = 10 * time.Second // a loaded machine answers slowly: no spurious retries
		cfg.AckWait = 5 * time.Second
		s, _ := env.startSinkOn(t, cfg, proto.RouteStreamName(route), proto.RouteFilter(route))
		sinks[route] = s
	}

	published := map[int64]time.Time{} // scrape timestamp -> when published
	start := time.Now()
	outageStart, outageEnd := start.Add(o.before), start.Add(o.before+o.outage)
	end := outageEnd.Add(o.after)
	var recovered time.Time
	for round := 0; ; round++ {
		now := time.Now()
		if now.After(end) {
			break
		}
		switch {
		case now.After(outageEnd) && recv["down"].down.Load():
			recv["down"].down.Store(false)
			recovered = now
		case now.After(outageStart) && now.Before(outageEnd) && !recv["down"].down.Load():
			recv["down"].down.Store(true)
		}
		millis := scrapeMillis + int64(round)*1000
		batch := stamped(series, millis)
		published[millis] = time.Now()
		for _, route := range routes {
			for n := range o.nodes {
				subj := proto.Subject{Stage: proto.StageRoute, Route: route, Cluster: "test", Node: fmt.Sprintf("node-%03d", n), Source: proto.SourceKubeProxy}
				// Every node's series carry its name, as the enricher adds it.
				env.publishScrape(t, subj, millis, withNode(batch, subj.Node))
			}
		}
		time.Sleep(time.Until(start.Add(time.Duration(round+1) * o.interval)))
	}
	if recovered.IsZero() {
		recv["down"].down.Store(false)
		recovered = time.Now()
	}
	perScrape := len(series) * o.nodes
	for _, route := range routes {
		rc := recv[route]
		waitFor(t, 2*o.outage+30*time.Second, route+" receives every scrape", func() bool {
			rc.mu.Lock()
			defer rc.mu.Unlock()
			return rc.total >= perScrape*len(published)
		})
	}

	var out []routeResult
	for _, route := range routes {
		rc := recv[route]
		rc.mu.Lock()
		res := routeResult{route: route, samples: rc.total, want: perScrape * len(published), outOfOrder: rc.outOfOrder, duplicates: rc.duplicates, rejected: rc.rejected}
		var lastArrival time.Time
		duringSamples := 0
		for millis, at := range published {
			if rc.samples[millis] != perScrape {
				res.missingScrap++
				continue
			}
			lat := rc.arrived[millis].Sub(at)
			if at.After(outageStart) && at.Before(outageEnd) {
				res.latOutage = append(res.latOutage, lat)
				duringSamples += perScrape
			} else {
				res.latOther = append(res.latOther, lat)
			}
			if rc.arrived[millis].After(lastArrival) {
				lastArrival = rc.arrived[millis]
			}
		}
		rc.mu.Unlock()
		res.samplesPerS = float64(duringSamples) / o.outage.Seconds()
		res.caughtUp = lastArrival.Sub(recovered)
		slices.Sort(res.latOutage)
		slices.Sort(res.latOther)
		out = append(out, res)
	}
	for _, route := range routes {
		if got := metricValue(t, sinks[route].metrics.samplesFailed.WithLabelValues("http_5xx")); got != 0 {
			t.Errorf("%s: %v samples failed; a 503 must be retried", route, got)
		}
	}
	if got := metricValue(t, sinks["down"].metrics.samplesRetried); got == 0 {
		t.Error("the down route retried nothing")
	}
	return out
}

// withNode returns series with a node label, sorted where it belongs.
func withNode(series []prompb.TimeSeries, node string) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, len(series))
	for i, ts := range series {
		ls := make([]prompb.Label, 0, len(ts.Labels)+1)
		added := false
		for _, l := range ts.Labels {
			if !added && l.Name > "node" {
				ls = append(ls, prompb.Label{Name: "node", Value: node})
				added = true
			}
			ls = append(ls, l)
		}
		if !added {
			ls = append(ls, prompb.Label{Name: "node", Value: node})
		}
		out[i] = prompb.TimeSeries{Labels: ls, Samples: ts.Samples}
	}
	return out
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

// TestOutageOfOneRouteDoesNotHoldUpOthers: while one route's backend
// answers 503, the other routes keep receiving every scrape as it is
// published; once it recovers, it receives everything, in order.
func TestOutageOfOneRouteDoesNotHoldUpOthers(t *testing.T) {
	o := outageRun{nodes: 4, interval: 250 * time.Millisecond, before: time.Second, outage: 8 * time.Second, after: time.Second}
	if d, err := time.ParseDuration(os.Getenv("WEIR_SINK_OUTAGE")); err == nil {
		// The load run of BENCHMARKS.md: a longer outage, more nodes.
		o = outageRun{nodes: 50, interval: time.Second, before: 30 * time.Second, outage: d, after: 30 * time.Second}
	}
	results := o.run(t)
	for _, r := range results {
		t.Logf("%-9s samples %d/%d, out of order %d, duplicates %d, 503s %d, scrapes during outage: p50 %s p99 %s max %s, %.0f samples/s; others: p50 %s p99 %s; caught up %s after recovery",
			r.route, r.samples, r.want, r.outOfOrder, r.duplicates, r.rejected,
			quantile(r.latOutage, 0.5), quantile(r.latOutage, 0.99), quantile(r.latOutage, 1),
			r.samplesPerS, quantile(r.latOther, 0.5), quantile(r.latOther, 0.99), r.caughtUp)
		if r.samples != r.want || r.missingScrap != 0 {
			t.Errorf("%s: %d of %d samples, %d scrapes incomplete", r.route, r.samples, r.want, r.missingScrap)
		}
		if r.outOfOrder != 0 {
			t.Errorf("%s: %d samples out of order", r.route, r.outOfOrder)
		}
		if r.route == "down" {
			if r.rejected == 0 {
				t.Errorf("the down backend answered no 503")
			}
			continue
		}
		// Held up by the outage, a scrape would wait for the backend to
		// recover: its latency would approach the outage itself.
		if worst := quantile(r.latOutage, 1); worst > o.outage/2 {
			t.Errorf("%s: a scrape published during the outage took %s to arrive; the outage held it up", r.route, worst)
		}
		if len(r.latOutage) == 0 {
			t.Errorf("%s: no scrape published during the outage", r.route)
		}
	}
}

package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// TestReplicasKeepPerTargetOrder runs three router replicas while scrapes
// of eight targets arrive; one replica leaves half way and another joins.
// Every route stream must hold every scrape exactly once, and each
// target's scrapes in the order they were taken.
func TestReplicasKeepPerTargetOrder(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(Route{Name: "all"}, Route{Name: "cpu", Match: []string{`{__name__=~"container_cpu_.*"}`}})
	start := func(member string) func() {
		r, err := New(cfg, Deps{Log: e.log(t).With("member", member), JS: e.js, Reg: prometheus.NewRegistry(), Streams: e.streams, Member: member})
		if err != nil {
			t.Fatal(err)
		}
		return runRouter(t, r)
	}
	start("a")
	stopB := start("b")
	start("c")

	const targets, scrapes = 8, 12
	series := captureSeries(t, fixtures.Cadvisor135, 0)[:300]
	for i := range scrapes {
		millis := int64(1000 * (i + 1))
		for n := range targets {
			e.publishScrape(t, enrichedSubject(fmt.Sprintf("node-%d", n), proto.SourceCadvisor), millis, stampedAt(series, millis))
		}
		switch i {
		case scrapes / 3:
			stopB()
		case scrapes / 2:
			start("d")
		}
		time.Sleep(50 * time.Millisecond) // scrapes arrive over time, while members change
	}
	waitFor(t, 30*time.Second, "every scrape in both route streams", func() bool {
		return e.streamMsgs(t, "WEIR_ROUTE_ALL") >= targets*scrapes && e.streamMsgs(t, "WEIR_ROUTE_CPU") >= targets*scrapes
	})
	e.waitRouted(t)
	for _, stream := range []string{"WEIR_ROUTE_ALL", "WEIR_ROUTE_CPU"} {
		perTarget := map[string][]int64{}
		for _, m := range e.readStream(t, stream) {
			subj, err := proto.ParseSubject(m.subject)
			if err != nil {
				t.Fatal(err)
			}
			perTarget[subj.Node] = append(perTarget[subj.Node], m.series[0].Samples[0].Timestamp)
		}
		if len(perTarget) != targets {
			t.Errorf("%s holds %d targets, want %d", stream, len(perTarget), targets)
		}
		for node, stamps := range perTarget {
			if len(stamps) != scrapes {
				t.Errorf("%s: %s has %d scrapes, want %d: %v", stream, node, len(stamps), scrapes, stamps)
				continue
			}
			for i, ts := range stamps {
				if ts != int64(1000*(i+1)) {
					t.Errorf("%s: %s scrapes in order %v, want 1000, 2000, …", stream, node, stamps)
					break
				}
			}
		}
	}
}

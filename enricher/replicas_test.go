package enricher

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// TestReplicasShareWorkAndSurviveACrash runs two replicas on the same
// stream; one dies mid-stream without a goodbye (its NATS connection
// drops, its messages unacknowledged). Every scrape of every target must
// still reach WEIR_ENRICHED, each target's scrapes in order.
func TestReplicasShareWorkAndSurviveACrash(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	setupStreams(t, js)
	cfg := DefaultConfig()
	cfg.AckWait = time.Second

	const targets, scrapes = 12, 45
	subject := func(i int) proto.Subject {
		return proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: fmt.Sprintf("node-%d", i), Source: proto.SourceKubelet}
	}
	series := make([]prompb.TimeSeries, 50)
	for i := range series {
		series[i] = prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "kubelet_x"}, {Name: "i", Value: strconv.Itoa(i)}},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: 1}},
		}
	}
	const base = int64(1_700_000_000_000)
	publish := func(from, to int) {
		for n := from; n < to; n++ {
			for i := range targets {
				publishScrape(t, js, subject(i), base+int64(n)*1000, series, 1<<20)
			}
		}
	}

	ncA, jsA := natstest.Connect(t, srv)
	_, jsB := natstest.Connect(t, srv)
	stopA := startEnricher(t, cfg, Deps{JS: jsA, Member: "a", Heartbeat: 200 * time.Millisecond})
	startEnricher(t, cfg, Deps{JS: jsB, Member: "b", Heartbeat: 200 * time.Millisecond})

	publish(0, scrapes/3)
	eventually(t, "the first third", func() bool { return streamMsgs(t, js, proto.StreamEnriched) >= targets*scrapes/3 })
	published := make(chan struct{})
	go func() { defer close(published); publish(scrapes/3, scrapes) }()
	eventually(t, "the rest to flow", func() bool { return streamMsgs(t, js, proto.StreamEnriched) >= targets*(scrapes/3+2) })
	ncA.Close() // a dies: no goodbye, its messages in flight unacknowledged
	<-published
	waitAll := time.Now().Add(20 * time.Second)
	for streamMsgs(t, js, proto.StreamEnriched) < targets*scrapes && time.Now().Before(waitAll) {
		time.Sleep(20 * time.Millisecond)
	}
	stopA()

	last := map[string]int64{}
	count := map[string]int{}
	for _, m := range readStream(t, js, proto.StreamEnriched, true) {
		millis, err := strconv.ParseInt(m.header.Get(proto.HeaderScrapeTime), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := proto.ParseSubject(m.subject)
		s.Partitioned, s.Partition = false, 0
		key := s.String()
		if prev, ok := last[key]; ok && millis <= prev {
			t.Errorf("%s: scrape %d stored after scrape %d", key, (millis-base)/1000, (prev-base)/1000)
		}
		last[key] = millis
		count[key]++
		if l := labelMap(t, m.batch.Series[0].Labels); l["cluster"] != "c1" || l["node"] != s.Node {
			t.Fatalf("%s not enriched: %v", key, l)
		}
	}
	for i := range targets {
		s := subject(i)
		s.Stage = proto.StageEnriched
		if count[s.String()] != scrapes {
			t.Errorf("%s: %d scrapes enriched, want %d", s, count[s.String()], scrapes)
		}
	}
}

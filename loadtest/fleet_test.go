package loadtest

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weirmetrics/weir/proto"
)

func TestFleetServesAndCounts(t *testing.T) {
	f, err := NewFleet(FleetConfig{Prefix: "n", Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Nodes) != 2 || len(f.Nodes[1].Targets) != len(AllEndpoints) || f.Nodes[1].Name != "n-1" {
		t.Fatalf("nodes %+v", f.Nodes)
	}
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The fleet counts a scrape once its handler has written it, which can
	// be a moment after the client read the last byte.
	statsReach := func(scrapes int64) FleetStats {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := f.Stats()
			if got.Scrapes >= scrapes || time.Now().After(deadline) {
				return got
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	var cadvisor Target
	for _, tg := range f.Nodes[0].Targets {
		if tg.Source == proto.SourceCadvisor {
			cadvisor = tg
		}
	}
	_, first := get(cadvisor.URL)
	f.Storm()
	_, second := get(cadvisor.URL)
	if first == second {
		t.Fatal("two scrapes served the same text: values, timestamps and pods should move")
	}
	if strings.Contains(first, `-g1"`) || !strings.Contains(second, `-g1"`) {
		t.Fatal("a storm should rename every pod at the next scrape, and only then")
	}
	size := f.ScrapeSize(cadvisor.Host, "/metrics/cadvisor", "")
	if size != 4621 {
		t.Fatalf("ScrapeSize of cadvisor %d, want the 4621 samples of the capture", size)
	}
	if got := statsReach(2); got.Scrapes != 2 || got.Offered != 2*int64(size) {
		t.Fatalf("stats %+v after two cadvisor scrapes", got)
	}
	proxy := f.Nodes[1].Targets[len(AllEndpoints)-1]
	if got := f.ScrapeSize(proxy.Host, "", "kubeproxy"); got != 224 {
		t.Fatalf("ScrapeSize of kube-proxy by job %d, want 224", got)
	}
	if got := f.ScrapeSize("127.0.0.1:1", "/metrics", ""); got != 0 {
		t.Fatalf("ScrapeSize of an unknown target %d, want 0", got)
	}
	var summaryTarget Target
	for _, tg := range f.Nodes[0].Targets {
		if tg.Source == proto.SourceSummary {
			summaryTarget = tg
		}
	}
	resp, err := http.Get(summaryTarget.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("/stats/summary served as %q", ct)
	}
	summarySize := f.ScrapeSize(summaryTarget.Host, "/stats/summary", "")
	if got := statsReach(3); got.Scrapes != 3 || got.Offered != 2*int64(size)+int64(summarySize) || summarySize == 0 {
		t.Fatalf("stats %+v after a summary scrape of %d samples", got, summarySize)
	}
	f.Stop(time.Hour)
	if code, _ := get(cadvisor.URL); code != http.StatusOK {
		t.Fatalf("status %d within the grace of Stop, want 200", code)
	}
	if got := statsReach(4); got.Offered != 3*int64(size)+int64(summarySize) {
		t.Fatalf("after a scrape within the grace: %+v; want it offered", got)
	}
	f.Stop(0)
	if code, _ := get(cadvisor.URL); code != http.StatusServiceUnavailable {
		t.Fatalf("status %d after Stop, want 503", code)
	}
	if got := f.Stats(); got.Scrapes != 4 || got.Offered != 3*int64(size)+int64(summarySize) || got.FailedSamples != 0 {
		t.Fatalf("after a scrape refused at the end: %+v; want it neither offered nor failed", got)
	}
}

func TestPeersSkipJSONEndpoints(t *testing.T) {
	cfg := FleetConfig{Prefix: "n", Nodes: 1}
	weir, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer weir.Close()
	peer, err := NewFleet(cfg.forPeers())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if len(peer.Nodes[0].Targets) != len(AllEndpoints)-1 {
		t.Fatalf("peer targets %+v, want every endpoint but /stats/summary", peer.Nodes[0].Targets)
	}
	if conf := scrapeConfig(peer, 15*time.Second, ""); strings.Contains(conf, "/stats/summary") {
		t.Fatalf("the peers' scrape configuration names /stats/summary:\n%s", conf)
	}
	summary := weir.ScrapeSize(weir.Nodes[0].Targets[4].Host, "/stats/summary", "")
	if want := peer.SamplesPerScrape() + summary; weir.SamplesPerScrape() != want || summary == 0 {
		t.Fatalf("weir's fleet offers %d per scrape, want the peers' %d and the summary's %d", weir.SamplesPerScrape(), peer.SamplesPerScrape(), summary)
	}
}

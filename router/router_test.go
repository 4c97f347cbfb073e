package router

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// TestRouterPublishesEachRoute feeds real scrapes into WEIR_ENRICHED and
// reads every route's stream back: each holds exactly the series its
// route keeps, in scrape order, under the input's message ids.
func TestRouterPublishesEachRoute(t *testing.T) {
	e := newEnv(t)
	noBuckets := Route{Name: "no-buckets", MaxAge: 2 * time.Hour, MaxBytes: 1 << 30, WriteRelabelConfigs: []*relabel.Config{{
		SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp(".*_bucket"), Action: relabel.Drop, Separator: ";",
	}}}
	e.startRouter(t, testConfig(
		Route{Name: "containers", Match: []string{`{__name__=~"container_.*"}`}},
		noBuckets,
		Route{Name: "none", Match: []string{`{__name__="not_in_any_capture"}`}},
	))

	cadvisor, kubelet := enrichedSubject("node-a", proto.SourceCadvisor), enrichedSubject("node-a", proto.SourceKubelet)
	c1 := captureSeries(t, fixtures.Cadvisor135, 1000, "job", "kubelet")
	c2 := captureSeries(t, fixtures.Cadvisor135, 2000, "job", "kubelet")
	k1 := captureSeries(t, fixtures.Kubelet121, 1000, "job", "kubelet")
	var ids []string
	ids = append(ids, e.publishScrape(t, cadvisor, 1000, c1)...)
	ids = append(ids, e.publishScrape(t, kubelet, 1000, k1)...)
	ids = append(ids, e.publishScrape(t, cadvisor, 2000, c2)...)
	if len(ids) != 3 {
		t.Fatalf("bad test: the captures took %d messages, want one each", len(ids))
	}
	e.waitRouted(t)

	isContainer := func(ls map[string]string) bool { return strings.HasPrefix(ls["__name__"], "container_") }
	notBucket := func(ls map[string]string) bool { return !strings.HasSuffix(ls["__name__"], "_bucket") }
	check := func(stream string, wantMsgs []struct {
		id     string
		source proto.Source
		series []prompb.TimeSeries
	}) {
		t.Helper()
		all := e.readStream(t, stream)
		if len(all) != len(wantMsgs) {
			t.Fatalf("%s holds %d messages, want %d", stream, len(all), len(wantMsgs))
		}
		// Order holds per target; targets in different partitions may
		// interleave either way.
		var got []routeMsg
		for _, source := range []proto.Source{proto.SourceCadvisor, proto.SourceKubelet} {
			for _, m := range all {
				if strings.Contains(m.subject, "."+string(source)+".") {
					got = append(got, m)
				}
			}
		}
		for i, w := range wantMsgs {
			g := got[i]
			subj, err := proto.ParseSubject(g.subject)
			if err != nil || subj.Stage != proto.StageRoute || proto.RouteStreamName(subj.Route) != stream ||
				subj.Cluster != "test" || subj.Node != "node-a" || subj.Source != w.source || !subj.Partitioned {
				t.Errorf("%s message %d: subject %q (%v)", stream, i, g.subject, err)
			}
			if id := g.header.Get(proto.HeaderMsgID); id != w.id {
				t.Errorf("%s message %d: id %q, want the input's %q", stream, i, id, w.id)
			}
			if pin := g.header.Get("Nats-Pin-Id"); pin != "" {
				t.Errorf("%s message %d: carries the pin id %q the router's delivery had: its reader would pull with it", stream, i, pin)
			}
			meta, err := proto.ParseMeta(g.header)
			if err != nil || meta.Samples != len(w.series) || meta.ScrapeMillis != w.series[0].Samples[0].Timestamp {
				t.Errorf("%s message %d: meta %+v (%v), want %d samples at %d", stream, i, meta, err, len(w.series), w.series[0].Samples[0].Timestamp)
			}
			if gk, wk := seriesKeys(g.series), seriesKeys(w.series); !slices.Equal(gk, wk) {
				t.Errorf("%s message %d: %d series, want %d: %v", stream, i, len(gk), len(wk), firstDiff(gk, wk))
			}
			for _, s := range g.series {
				if s.Samples[0].Timestamp != w.series[0].Samples[0].Timestamp {
					t.Fatalf("%s message %d: sample at %d, want %d", stream, i, s.Samples[0].Timestamp, w.series[0].Samples[0].Timestamp)
				}
			}
		}
	}
	type msg = struct {
		id     string
		source proto.Source
		series []prompb.TimeSeries
	}
	// The kubelet scrape has no container_ series: nothing for that route.
	if len(want(k1, isContainer)) != 0 || len(want(k1, notBucket)) == len(k1) {
		t.Fatal("bad test: expected the kubelet capture to hold histograms and no container_ series")
	}
	check("WEIR_ROUTE_CONTAINERS", []msg{{ids[0], proto.SourceCadvisor, want(c1, isContainer)}, {ids[2], proto.SourceCadvisor, want(c2, isContainer)}})
	check("WEIR_ROUTE_NO-BUCKETS", []msg{{ids[0], proto.SourceCadvisor, c1}, {ids[2], proto.SourceCadvisor, c2}, {ids[1], proto.SourceKubelet, want(k1, notBucket)}})
	if n := e.streamMsgs(t, "WEIR_ROUTE_NONE"); n != 0 {
		t.Errorf("WEIR_ROUTE_NONE holds %d messages, want 0", n)
	}

	// Each route's stream has its own retention.
	info, err := e.js.Stream(context.Background(), "WEIR_ROUTE_NO-BUCKETS")
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().Config; c.MaxAge != 2*time.Hour || c.MaxBytes != 1<<30 {
		t.Errorf("no-buckets stream: max_age %s max_bytes %d, want 2h and 1GiB", c.MaxAge, c.MaxBytes)
	}
	info, err = e.js.Stream(context.Background(), "WEIR_ROUTE_CONTAINERS")
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().Config; c.MaxAge != e.streams.MaxAge || c.MaxBytes != int64(e.streams.MaxBytes) {
		t.Errorf("containers stream: max_age %s max_bytes %d, want the defaults", c.MaxAge, c.MaxBytes)
	}

	// Metrics, per route.
	total := float64(len(c1) + len(c2) + len(k1))
	containers := float64(len(want(c1, isContainer)) + len(want(c2, isContainer)))
	buckets := float64(len(k1) - len(want(k1, notBucket)))
	for _, m := range []struct {
		name  string
		pairs []string
		want  float64
	}{
		{"weir_router_messages_received_total", nil, 3},
		{"weir_router_messages_acked_total", nil, 3},
		{"weir_router_messages_in_total", []string{"route", "none"}, 3},
		{"weir_router_messages_published_total", []string{"route", "containers"}, 2},
		{"weir_router_messages_published_total", []string{"route", "no-buckets"}, 3},
		{"weir_router_messages_dropped_total", []string{"route", "none", "reason", "empty"}, 3},
		{"weir_router_messages_dropped_total", []string{"route", "containers", "reason", "empty"}, 1},
		{"weir_router_series_in_total", []string{"route", "containers"}, total},
		{"weir_router_series_kept_total", []string{"route", "containers"}, containers},
		{"weir_router_series_dropped_total", []string{"route", "containers", "reason", "match"}, total - containers},
		{"weir_router_series_dropped_total", []string{"route", "no-buckets", "reason", "relabel"}, buckets},
		{"weir_router_samples_kept_total", []string{"route", "no-buckets"}, total - buckets},
		{"weir_router_samples_dropped_total", []string{"route", "none", "reason", "match"}, total},
		{"weir_router_publish_failures_total", []string{"route", "containers"}, 0},
	} {
		if got := counter(t, e.reg, m.name, m.pairs...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.pairs, got, m.want)
		}
	}
}

// TestRouterAcksOnlyAfterEveryRoute takes one route's stream away: the
// router must keep the input unacknowledged and retry, stop cleanly while
// retrying, and deliver once the stream is back, without duplicating what
// the healthy route already stored.
func TestRouterAcksOnlyAfterEveryRoute(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(Route{Name: "healthy"}, Route{Name: "broken"})
	_, stop := e.startRouter(t, cfg)
	ctx := context.Background()
	waitFor(t, 10*time.Second, "route streams created", func() bool {
		_, err := e.js.Stream(ctx, "WEIR_ROUTE_BROKEN")
		return err == nil
	})
	if err := e.js.DeleteStream(ctx, "WEIR_ROUTE_BROKEN"); err != nil {
		t.Fatal(err)
	}
	series := captureSeries(t, fixtures.Cadvisor135, 1000)
	e.publishScrape(t, enrichedSubject("node-a", proto.SourceCadvisor), 1000, series)

	waitFor(t, 10*time.Second, "a failed publish to the broken route", func() bool {
		return counter(t, e.reg, "weir_router_publish_failures_total", "route", "broken") >= 2
	})
	acked := func() (floor uint64, pending int) {
		infos, ok := e.consumerInfos()
		if !ok {
			t.Fatal("the router's consumers are gone")
		}
		for _, info := range infos {
			floor, pending = max(floor, info.AckFloor.Stream), pending+info.NumAckPending
		}
		return floor, pending
	}
	if floor, pending := acked(); floor != 0 || pending != 1 {
		t.Fatalf("input acked while a route's publish fails: ack floor %d, pending %d", floor, pending)
	}
	if n := e.streamMsgs(t, "WEIR_ROUTE_HEALTHY"); n != 1 {
		t.Fatalf("healthy route holds %d messages, want 1", n)
	}
	if got := counter(t, e.reg, "weir_router_publish_failures_total", "route", "healthy"); got != 0 {
		t.Errorf("healthy route counted %v publish failures", got)
	}

	// Stopping while retrying: Run returns once publish_timeout has passed,
	// and the message goes back unacked.
	stopped := time.Now()
	stop()
	if d := time.Since(stopped); d > cfg.PublishTimeout+5*time.Second {
		t.Errorf("stopping took %s with publish_timeout %s", d, cfg.PublishTimeout)
	}
	if floor, _ := acked(); floor != 0 {
		t.Fatalf("after stop: ack floor %d; want the message left unacknowledged", floor)
	}

	// A new router recreates the stream and delivers; the healthy route
	// drops the replay by its message id.
	e.reg = prometheus.NewRegistry()
	e.startRouter(t, cfg)
	e.waitRouted(t)
	for _, stream := range []string{"WEIR_ROUTE_HEALTHY", "WEIR_ROUTE_BROKEN"} {
		got := e.readStream(t, stream)
		if len(got) != 1 || len(got[0].series) != len(series) {
			t.Errorf("%s holds %d messages, want 1 with %d series", stream, len(got), len(series))
		}
	}
}

// TestRouterReplayIsDeduplicated routes the same input twice, as after a
// crash between publishing and acking: the route streams keep one copy.
func TestRouterReplayIsDeduplicated(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig(Route{Name: "a"}, Route{Name: "b", Match: []string{`{__name__=~"container_cpu.*"}`}})
	_, stop := e.startRouter(t, cfg)
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	for i := range int64(3) {
		e.publishScrape(t, subj, 1000*(i+1), captureSeries(t, fixtures.Cadvisor135, 1000*(i+1)))
	}
	e.waitRouted(t)
	stop()
	e.deleteConsumers(t)
	e.reg = prometheus.NewRegistry()
	e.startRouter(t, cfg)
	e.waitRouted(t)
	if got := counter(t, e.reg, "weir_router_messages_acked_total"); got != 3 {
		t.Fatalf("the second router acked %v messages, want all 3 again", got)
	}
	for _, stream := range []string{"WEIR_ROUTE_A", "WEIR_ROUTE_B"} {
		got := e.readStream(t, stream)
		if len(got) != 3 {
			t.Fatalf("%s holds %d messages after a replay, want 3", stream, len(got))
		}
		for i, m := range got {
			if ts := m.series[0].Samples[0].Timestamp; ts != 1000*int64(i+1) {
				t.Errorf("%s message %d holds samples at %d, want %d: out of order", stream, i, ts, 1000*(i+1))
			}
		}
	}
}

// TestRouterDeadLetters sends what cannot be decoded to weir.dead.router
// and keeps routing the rest.
func TestRouterDeadLetters(t *testing.T) {
	e := newEnv(t)
	e.startRouter(t, testConfig(Route{Name: "all"}))
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	bad := []struct {
		name    string
		header  map[string]string
		data    []byte
		wantErr string
	}{
		{"not snappy", map[string]string{proto.HeaderEncoding: proto.DefaultEncoding.Name(), proto.HeaderMsgID: "bad-1"}, []byte("not a payload"), "malformed payload"},
		{"unknown encoding", map[string]string{proto.HeaderEncoding: "gzip+json", proto.HeaderMsgID: "bad-2"}, []byte("{}"), `unknown encoding: "gzip+json"`},
		{"no headers", nil, []byte("x"), "missing Weir-Encoding header"},
	}
	for _, b := range bad {
		msg := nats.NewMsg(subj.String())
		for k, v := range b.header {
			msg.Header.Set(k, v)
		}
		msg.Data = b.data
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	good := captureSeries(t, fixtures.Cadvisor135, 5000)
	e.publishScrape(t, subj, 5000, good)
	e.waitRouted(t)

	s, err := e.js.Stream(context.Background(), proto.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range bad {
		raw, err := s.GetMsg(context.Background(), uint64(i+1))
		if err != nil {
			t.Fatalf("dead letter %d (%s): %v", i, b.name, err)
		}
		if raw.Subject != proto.DeadSubject("router") || !strings.Contains(raw.Header.Get(proto.HeaderError), b.wantErr) ||
			!strings.HasPrefix(raw.Header.Get(proto.HeaderSubject), subj.String()+".") || string(raw.Data) != string(b.data) {
			t.Errorf("dead letter %d (%s): subject %s, error %q, from %q, data %q; want error with %q",
				i, b.name, raw.Subject, raw.Header.Get(proto.HeaderError), raw.Header.Get(proto.HeaderSubject), raw.Data, b.wantErr)
		}
	}
	if got := counter(t, e.reg, "weir_router_messages_dead_total"); got != 3 {
		t.Errorf("weir_router_messages_dead_total = %v, want 3", got)
	}
	if got := e.readStream(t, "WEIR_ROUTE_ALL"); len(got) != 1 || len(got[0].series) != len(good) {
		t.Errorf("the good message after the bad ones: route holds %d messages", len(got))
	}
	// A route that keeps everything counts what it passed on without
	// decoding it, and publishes the payload as it came.
	if got := counter(t, e.reg, "weir_router_series_kept_total", "route", "all"); got != float64(len(good)) {
		t.Errorf("weir_router_series_kept_total = %v, want %d", got, len(good))
	}
	if got := counter(t, e.reg, "weir_router_samples_kept_total", "route", "all"); got != float64(len(good)) {
		t.Errorf("weir_router_samples_kept_total = %v, want %d", got, len(good))
	}
	in, err := e.js.Stream(context.Background(), proto.StreamEnriched)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.js.Stream(context.Background(), "WEIR_ROUTE_ALL")
	if err != nil {
		t.Fatal(err)
	}
	sent, err := in.GetMsg(context.Background(), uint64(len(bad)+1))
	if err != nil {
		t.Fatal(err)
	}
	routed, err := out.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent.Data, routed.Data) {
		t.Errorf("the route published %d bytes that differ from the %d it read", len(routed.Data), len(sent.Data))
	}
}

// TestRouterSplitsWhatRelabelingGrows: a route whose relabeling makes a
// message larger than the server's limit publishes it in parts, each with
// its own message id, and loses no series.
func TestRouterSplitsWhatRelabelingGrows(t *testing.T) {
	e := newEnv(t)
	// A new label unique to every series, which no encoding can compress
	// away, with the smallest message limit the router accepts.
	cfg := testConfig(Route{Name: "big", WriteRelabelConfigs: []*relabel.Config{{
		SourceLabels: model.LabelNames{"__name__", "id", "image", "name", "pod", "device"}, TargetLabel: "padding", Replacement: "$1",
		Regex: relabel.MustNewRegexp("(.*)"), Action: relabel.Replace, Separator: ";",
	}}})
	r, err := New(cfg, Deps{Log: e.log(t), JS: e.js, Streams: e.streams, MaxPayload: 2 * minPayload})
	if err != nil {
		t.Fatal(err)
	}
	runRouter(t, r)
	series := captureSeries(t, fixtures.Cadvisor135, 1000)
	ids := e.publishScrape(t, enrichedSubject("node-a", proto.SourceCadvisor), 1000, series)
	e.waitRouted(t)
	got := e.readStream(t, "WEIR_ROUTE_BIG")
	if len(got) < 2 {
		t.Fatalf("route holds %d messages; the relabeled scrape should need several", len(got))
	}
	n, seen := 0, map[string]bool{}
	for i, m := range got {
		id := m.header.Get(proto.HeaderMsgID)
		if seen[id] || !strings.HasPrefix(id, ids[0]) {
			t.Errorf("part %d: id %q, want a unique id starting with %q", i, id, ids[0])
		}
		seen[id] = true
		meta, err := proto.ParseMeta(m.header)
		if err != nil || meta.Samples != len(m.series) {
			t.Errorf("part %d: %d samples in the header (%v), %d in the payload", i, meta.Samples, err, len(m.series))
		}
		n += len(m.series)
	}
	if n != len(series) {
		t.Errorf("parts hold %d series, want %d", n, len(series))
	}
}

// A route stream an operator gave a source, e.g. to gather a route from
// several hubs, keeps it when the router starts again.
func TestRouterKeepsTheSourcesOfRouteStreams(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, stop := e.startRouter(t, testConfig(Route{Name: "a"}))
	waitFor(t, 10*time.Second, "the router's consumers", func() bool {
		_, ok := e.consumerInfos()
		return ok
	})
	stop()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER_HUB", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	st, err := e.js.Stream(ctx, "WEIR_ROUTE_A")
	if err != nil {
		t.Fatal(err)
	}
	withSource := st.CachedInfo().Config
	withSource.Sources = []*jetstream.StreamSource{{Name: "OTHER_HUB"}}
	if _, err := e.js.UpdateStream(ctx, withSource); err != nil {
		t.Fatal(err)
	}
	r, err := New(testConfig(Route{Name: "a"}), Deps{Log: e.log(t), JS: e.js, Streams: e.streams})
	if err != nil {
		t.Fatal(err)
	}
	runRouter(t, r)
	// A message routed: the router has ensured its streams.
	e.publishScrape(t, enrichedSubject("node-a", proto.SourceKubelet), 1000, captureSeries(t, fixtures.Kubelet121, 10))
	e.waitRouted(t)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Config.Sources) != 1 || info.Config.Sources[0].Name != "OTHER_HUB" {
		t.Errorf("sources of WEIR_ROUTE_A after the router started: %+v, want OTHER_HUB kept", info.Config.Sources)
	}
}

func TestRouterLifecycle(t *testing.T) {
	e := newEnv(t)
	r, err := New(testConfig(Route{Name: "a"}), Deps{JS: e.js, Streams: e.streams})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}

	if _, err := New(testConfig(), Deps{JS: e.js, Streams: e.streams}); err == nil || !strings.Contains(err.Error(), "routes: empty") {
		t.Errorf("New without routes = %v", err)
	}
	if _, err := New(testConfig(Route{Name: "a"}), Deps{Streams: e.streams}); err == nil || !strings.Contains(err.Error(), "JS is nil") {
		t.Errorf("New without JetStream = %v", err)
	}

	r, err = New(testConfig(Route{Name: "a"}), Deps{JS: e.js, Streams: e.streams})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, 10*time.Second, "the router's consumers", func() bool {
		_, ok := e.consumerInfos()
		return ok
	})
	if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	cancel()
}

package alerter

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weirmetrics/weir/collector"
	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

const e2eRules = `groups:
  - name: e2e
    interval: 100ms
    rules:
      - alert: KubeletMemoryHigh
        expr: series("process_resident_memory_bytes", ` + "`job=\"kubelet\", metrics_path=\"/metrics\"`" + `) > 1073741824
        for: 1s
        labels:
          severity: page
        annotations:
          summary: "Kubelet on {{ $labels.node }} uses {{ humanizeBytes $value }}"
`

func testConfig(t *testing.T, rules string, am *alertmanager) Config {
	cfg := DefaultConfig()
	cfg.RuleFiles = []string{writeFile(t, t.TempDir(), "rules.yaml", rules)}
	cfg.EvaluationInterval = 100 * time.Millisecond
	cfg.ReloadCheckInterval = 100 * time.Millisecond
	cfg.Warmup = 2 * time.Second
	// A stopping alerter unpins itself, but a pull request it left at the
	// server may be pinned again; then the standby waits for this.
	cfg.PinnedTTL = 2 * time.Second
	if am != nil {
		cfg.Alertmanagers = []AlertmanagerConfig{{URL: config.MustParseURL(am.url), Timeout: 5 * time.Second}}
	}
	return cfg
}

// start runs a until the returned stop is called.
func start(t *testing.T, a *Alerter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("alerter run: %v", err)
			}
			_ = a.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// events reads every state change published to weir.alerts so far.
func events(t *testing.T, js jetstream.JetStream) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, StreamAlerts)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // the alerter has not started yet
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var ev Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		out = append(out, ev)
	}
	return out
}

func states(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.State)
	}
	return out
}

// TestEndToEndAlertmanager: a kubelet whose memory crosses the threshold,
// scraped by the real collector, reaches a real Alertmanager with its
// labels and annotations; when memory goes back the alert is resolved.
func TestEndToEndAlertmanager(t *testing.T) {
	am, am2 := startAlertmanager(t), startAlertmanager(t)
	srv := natstest.Run(t)
	nc, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	kubelet := startKubelet(t)
	ccfg := collector.DefaultConfig()
	ccfg.ScrapeInterval, ccfg.ScrapeTimeout = 100*time.Millisecond, 100*time.Millisecond
	ccfg.Targets = []collector.TargetConfig{{URL: config.MustParseURL(kubelet.srv.URL + "/metrics"), Source: proto.SourceKubelet}}
	col, err := collector.New(ccfg, collector.Deps{JS: js, Cluster: "c1", Node: "node-a", MaxPayload: int(nc.MaxPayload())})
	if err != nil {
		t.Fatal(err)
	}
	colCtx, stopCol := context.WithCancel(ctx)
	colDone := make(chan struct{})
	go func() { defer close(colDone); _ = col.Run(colCtx) }()
	t.Cleanup(func() { stopCol(); <-colDone; _ = col.Close() })
	t.Cleanup(relay(ctx, t, js))

	cfg := testConfig(t, e2eRules, am)
	// Every alert goes to every Alertmanager.
	cfg.Alertmanagers = append(cfg.Alertmanagers, AlertmanagerConfig{URL: config.MustParseURL(am2.url), Timeout: 5 * time.Second})
	a, err := New(cfg, Deps{Log: testLogger(t), JS: js, Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, a)

	kubelet.memory.Store(3 << 30)
	var got gettableAlert
	waitFor(t, 15*time.Second, "the alert in alertmanager", func() bool {
		for _, al := range am.alerts(t) {
			if al.Labels["alertname"] == "KubeletMemoryHigh" && al.Status.State == "active" {
				got = al
				return true
			}
		}
		return false
	})
	wantLabels := map[string]string{
		"alertname": "KubeletMemoryHigh", "cluster": "c1", "node": "node-a", "job": "kubelet",
		"instance": kubelet.srv.Listener.Addr().String(), "metrics_path": "/metrics", "severity": "page",
	}
	if len(got.Labels) != len(wantLabels) {
		t.Errorf("labels %v, want %v", got.Labels, wantLabels)
	}
	for k, v := range wantLabels {
		if got.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (all: %v)", k, got.Labels[k], v, got.Labels)
		}
	}
	if s := got.Annotations["summary"]; s != "Kubelet on node-a uses 3Gi" {
		t.Errorf("summary %q, want %q", s, "Kubelet on node-a uses 3Gi")
	}
	waitFor(t, 5*time.Second, "the alert in the second alertmanager", func() bool {
		for _, al := range am2.alerts(t) {
			if al.Labels["alertname"] == "KubeletMemoryHigh" && al.Labels["node"] == "node-a" && al.Status.State == "active" {
				return true
			}
		}
		return false
	})

	kubelet.memory.Store(100 << 20)
	waitFor(t, 15*time.Second, "the alert resolved in alertmanager", func() bool {
		for _, al := range am.alerts(t) {
			if al.Labels["alertname"] == "KubeletMemoryHigh" && al.Status.State == "active" && al.EndsAt.After(time.Now()) {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "the alert resolved in the second alertmanager", func() bool {
		for _, al := range am2.alerts(t) {
			if al.Labels["alertname"] == "KubeletMemoryHigh" && al.Status.State == "active" && al.EndsAt.After(time.Now()) {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "the resolved event", func() bool {
		evs := events(t, js)
		return len(evs) > 0 && evs[len(evs)-1].State == "resolved"
	})
	if got := states(events(t, js)); len(got) != 3 || got[0] != "pending" || got[1] != "firing" || got[2] != "resolved" {
		t.Errorf("state changes %v, want [pending firing resolved]", got)
	}
}

// TestRestartWhilePending: an alerter stopped while an alert is pending is
// replaced by a new one, which fires on the original for clock, once.
func TestRestartWhilePending(t *testing.T) {
	am := startAlertmanager(t)
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	const hold = 3 * time.Second
	rules := `groups:
  - name: restart
    interval: 100ms
    rules:
      - alert: Hot
        expr: series("temperature") > 50
        for: 3s
        annotations:
          summary: "{{ $labels.node }} at {{ $value }}"
`
	pubCtx, stopPub := context.WithCancel(ctx)
	var pubWG sync.WaitGroup
	pubWG.Go(func() { publishLoop(pubCtx, t, js, "node-a", "temperature", 80) })
	t.Cleanup(func() { stopPub(); pubWG.Wait() })

	cfg := testConfig(t, rules, am)
	first, err := New(cfg, Deps{Log: testLogger(t), JS: js, Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	stopFirst := start(t, first)
	var pending Event
	waitFor(t, 10*time.Second, "the pending event", func() bool {
		evs := events(t, js)
		if len(evs) > 0 {
			pending = evs[0]
		}
		return len(evs) > 0
	})
	if pending.State != "pending" {
		t.Fatalf("first event %+v, want pending", pending)
	}
	time.Sleep(hold / 3) // part of the for clock runs on the first alerter
	stopFirst()
	restartedAt := time.Now()
	if n := am.posts.Load(); n != 0 {
		t.Fatalf("%d posts to alertmanager while pending, want 0", n)
	}

	second, err := New(cfg, Deps{Log: testLogger(t), JS: js, Cluster: "c1", Reg: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	start(t, second)
	var firing Event
	waitFor(t, 10*time.Second, "the firing event", func() bool {
		for _, e := range events(t, js) {
			if e.State == "firing" {
				firing = e
				return true
			}
		}
		return false
	})
	if !firing.ActiveAt.Equal(pending.ActiveAt) {
		t.Errorf("firing activeAt %s, want the first alerter's %s", firing.ActiveAt, pending.ActiveAt)
	}
	late := firing.At.Sub(pending.ActiveAt) - hold
	if late < 0 || late > 1500*time.Millisecond {
		t.Errorf("fired %s after the for clock ended, want within 1.5s", late)
	}
	if firing.At.Sub(restartedAt) >= hold {
		t.Errorf("fired %s after the restart: the for clock started again", firing.At.Sub(restartedAt))
	}
	waitFor(t, 5*time.Second, "the post to alertmanager", func() bool { return am.posts.Load() >= 1 })
	time.Sleep(500 * time.Millisecond) // several evaluations: none may post again
	if n := am.posts.Load(); n != 1 {
		t.Errorf("%d posts to alertmanager, want 1 (resend_delay is 1m)", n)
	}
	if got := states(events(t, js)); len(got) != 2 || got[0] != "pending" || got[1] != "firing" {
		t.Errorf("state changes %v, want [pending firing]", got)
	}
}

// startTwoAlerters starts an Alertmanager, a JetStream server publishing
// a temperature of 80 steadily, and two alerters on one durable with the
// rule Hot: series("temperature") > 50, evaluated every 100ms.
func startTwoAlerters(t *testing.T, tweak func(*Config)) (jetstream.JetStream, *alertmanager, Config, [2]*Alerter, [2]func()) {
	t.Helper()
	am := startAlertmanager(t)
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	rules := "groups:\n  - name: g\n    interval: 100ms\n    rules:\n      - alert: Hot\n        expr: series(\"temperature\") > 50\n"
	pubCtx, stopPub := context.WithCancel(ctx)
	var pubWG sync.WaitGroup
	pubWG.Go(func() { publishLoop(pubCtx, t, js, "node-a", "temperature", 80) })
	t.Cleanup(func() { stopPub(); pubWG.Wait() })
	cfg := testConfig(t, rules, am)
	if tweak != nil {
		tweak(&cfg)
	}
	var alerters [2]*Alerter
	var stops [2]func()
	for i := range alerters {
		a, err := New(cfg, Deps{Log: testLogger(t), JS: js, Cluster: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		alerters[i], stops[i] = a, start(t, a)
	}
	return js, am, cfg, alerters, stops
}

// TestStandbyTakesOver: two alerters on one durable; the server delivers
// to one, the other stands by without evaluating. When the active one
// stops, the standby takes over its alerts: no new pending or firing, no
// second notification.
func TestStandbyTakesOver(t *testing.T) {
	js, am, _, alerters, stops := startTwoAlerters(t, nil)
	waitFor(t, 10*time.Second, "Hot firing", func() bool { return slices.Contains(states(events(t, js)), "firing") })
	active, standby := 0, 1
	if !alerters[0].active.Load() {
		active, standby = 1, 0
	}
	time.Sleep(300 * time.Millisecond) // a few evaluations
	if alerters[standby].active.Load() || testutil.ToFloat64(alerters[standby].m.messages.WithLabelValues("ok")) != 0 {
		t.Fatal("both alerters received messages")
	}
	if got := states(events(t, js)); !slices.Equal(got, []string{"pending", "firing"}) {
		t.Fatalf("state changes %v, want [pending firing] once", got)
	}

	stops[active]()
	waitFor(t, 10*time.Second, "the standby to take over", func() bool {
		return testutil.ToFloat64(alerters[standby].m.alerts.WithLabelValues("firing")) == 1
	})
	time.Sleep(500 * time.Millisecond) // several evaluations by the new active alerter
	if got := states(events(t, js)); !slices.Equal(got, []string{"pending", "firing"}) {
		t.Errorf("state changes %v after the takeover, want still [pending firing]", got)
	}
	if n := am.posts.Load(); n != 1 {
		t.Errorf("%d posts to alertmanager, want 1", n)
	}
}

// TestDeposedAlerterStandsDown: when the server pins the other alerter of
// a durable (here an operator unpins the active one), the deposed one
// stops evaluating at once, before its windows, which get no more data,
// empty: it neither resolves the alert that still holds nor notifies.
// The new active one takes the alert over from the state bucket.
func TestDeposedAlerterStandsDown(t *testing.T) {
	js, am, cfg, alerters, stops := startTwoAlerters(t, func(cfg *Config) {
		cfg.LookbackDelta = time.Second // a deposed alerter would see no series a second after
	})
	ctx := t.Context()
	firing := func(a *Alerter) bool { return testutil.ToFloat64(a.m.alerts.WithLabelValues("firing")) == 1 }
	// Firing and stored: the gauge is set after the state is saved.
	waitFor(t, 10*time.Second, "Hot firing", func() bool { return firing(alerters[0]) || firing(alerters[1]) })
	old, next, stopNext := alerters[0], alerters[1], stops[1]
	if !firing(old) {
		old, next, stopNext = next, old, stops[0]
	}
	if !old.active.Load() || next.active.Load() {
		t.Fatal("the firing alerter is not the only active one")
	}

	stream, err := js.Stream(ctx, proto.StreamEnriched)
	if err != nil {
		t.Fatal(err)
	}
	// The server pins whichever alerter's pull comes first: unpin until it
	// is the other one.
	deadline := time.Now().Add(30 * time.Second)
	for !next.active.Load() {
		if time.Now().After(deadline) {
			t.Fatal("timed out unpinning the active alerter until the other one is pinned")
		}
		if err := stream.UnpinConsumer(ctx, cfg.Durable, pinGroup); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(time.Second); time.Now().Before(end) && !next.active.Load(); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	movedAt := time.Now()
	waitFor(t, 10*time.Second, "the new active alerter to take the alert over", func() bool { return firing(next) })
	// Past the lookback delta, and several evaluations by the new one.
	evals := histCount(t, next, "g")
	waitFor(t, 20*time.Second, "evaluations past the lookback delta", func() bool {
		return time.Since(movedAt) > cfg.LookbackDelta+time.Second && histCount(t, next, "g") >= evals+10
	})

	if got := states(events(t, js)); !slices.Equal(got, []string{"pending", "firing"}) {
		t.Errorf("state changes %v after the pin moved, want still [pending firing]", got)
	}
	am.mu.Lock()
	for _, post := range am.posted {
		for _, al := range post {
			if !al.EndsAt.After(al.StartsAt.Add(time.Minute)) {
				t.Errorf("alert posted resolved (endsAt %s): %v", al.EndsAt, al.Labels)
			}
		}
	}
	am.mu.Unlock()
	if n := am.posts.Load(); n != 1 {
		t.Errorf("%d posts to alertmanager, want 1", n)
	}
	waitFor(t, 10*time.Second, "the deposed alerter to stand by", func() bool { return !old.active.Load() })
	// Exactly one evaluates: the deposed one no longer does.
	oldEvals, nextEvals := histCount(t, old, "g"), histCount(t, next, "g")
	waitFor(t, 10*time.Second, "more evaluations by the active alerter", func() bool { return histCount(t, next, "g") >= nextEvals+5 })
	if n := histCount(t, old, "g"); n != oldEvals {
		t.Errorf("the deposed alerter evaluated %d more times", n-oldEvals)
	}
	if !firing(next) || firing(old) {
		t.Errorf("firing alerts: active %v, deposed %v; want 1 and 0",
			testutil.ToFloat64(next.m.alerts.WithLabelValues("firing")), testutil.ToFloat64(old.m.alerts.WithLabelValues("firing")))
	}

	// The deposed one takes over again, as a standby does, when the
	// active one stops: from the bucket, without notifying again.
	stopNext()
	waitFor(t, 10*time.Second, "the deposed alerter to take the alert back", func() bool { return old.active.Load() && firing(old) })
	oldEvals = histCount(t, old, "g")
	waitFor(t, 10*time.Second, "evaluations after taking the alert back", func() bool { return histCount(t, old, "g") >= oldEvals+5 })
	if got := states(events(t, js)); !slices.Equal(got, []string{"pending", "firing"}) {
		t.Errorf("state changes %v after the second takeover, want still [pending firing]", got)
	}
	if n := am.posts.Load(); n != 1 {
		t.Errorf("%d posts to alertmanager after the second takeover, want 1", n)
	}
}

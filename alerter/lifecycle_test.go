package alerter

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

const lifeRules = `groups:
  - name: life
    interval: 100ms
    rules:
      - alert: Broken
        # Both nodes get the same labels once node is overwritten: a
        # run-time error, not a load-time one.
        expr: series("temperature") > 0
        labels:
          node: same
      - alert: Hot
        expr: series("temperature") > 50
`

// TestRuntimeFailureAndReload: a rule that fails at run time is unhealthy
// while the others fire; a bad file keeps the old rules; a good one is
// picked up on change, and alerts of unchanged rules carry over.
func TestRuntimeFailureAndReload(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	var pubWG sync.WaitGroup
	for _, node := range []string{"node-a", "node-b"} {
		pubWG.Go(func() { publishLoop(pubCtx, t, js, node, "temperature", 80) })
	}
	t.Cleanup(func() { stopPub(); pubWG.Wait() })

	cfg := testConfig(t, lifeRules, nil)
	a, err := New(cfg, Deps{Log: testLogger(t), JS: js, Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, a)
	firing := func(alertname string) int {
		n := 0
		for _, e := range events(t, js) {
			if e.Alertname == alertname && e.State == "firing" {
				n++
			}
		}
		return n
	}
	waitFor(t, 10*time.Second, "Hot firing on both nodes", func() bool { return firing("Hot") == 2 })
	waitFor(t, 5*time.Second, "Broken marked unhealthy", func() bool {
		return testutil.ToFloat64(a.m.ruleHealth.WithLabelValues("life", "Broken")) == 0 &&
			testutil.ToFloat64(a.m.ruleHealth.WithLabelValues("life", "Hot")) == 1
	})
	if n := testutil.ToFloat64(a.m.evalFailures.WithLabelValues("life")); n < 1 {
		t.Errorf("evaluation failures %v, want at least 1", n)
	}
	if n := firing("Broken"); n != 0 {
		t.Errorf("Broken fired %d times", n)
	}

	// A bad file: the old rules keep running.
	if err := os.WriteFile(cfg.RuleFiles[0], []byte(lifeRules+"      - alert: Typo\n        expr: rat(series(\"x\"), \"5m\") > 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the failed reload", func() bool {
		return testutil.ToFloat64(a.m.reloads.WithLabelValues("failure")) == 1
	})
	if v := testutil.ToFloat64(a.m.reloadOK); v != 0 {
		t.Errorf("last reload successful = %v after a bad file, want 0", v)
	}
	before := histCount(t, a, "life")
	waitFor(t, 5*time.Second, "evaluations after the failed reload", func() bool { return histCount(t, a, "life") > before+3 })

	// A good file: the new rule runs, Hot's alerts carry over.
	good := lifeRules + "      - alert: Warm\n        expr: series(\"temperature\") < 100\n"
	if err := os.WriteFile(cfg.RuleFiles[0], []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "Warm firing after the reload", func() bool { return firing("Warm") == 2 })
	if v := testutil.ToFloat64(a.m.reloadOK); v != 1 {
		t.Errorf("last reload successful = %v, want 1", v)
	}
	var hot []string
	for _, e := range events(t, js) {
		if e.Alertname == "Hot" {
			hot = append(hot, e.State)
		}
	}
	slices.Sort(hot)
	if !slices.Equal(hot, []string{"firing", "firing", "pending", "pending"}) {
		t.Errorf("Hot state changes %v, want each node once pending then firing", hot)
	}
}

func histCount(t *testing.T, a *Alerter, group string) uint64 {
	t.Helper()
	m := &dto.Metric{}
	if err := a.m.evalDuration.WithLabelValues(group).(prometheus.Metric).Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestUndecodableMessageIsDeadLettered: a message that is not a batch goes
// to weir.dead.alerter with the reason, and the alerter keeps going.
func TestUndecodableMessageIsDeadLettered(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	a, err := New(testConfig(t, lifeRules, nil), Deps{Log: testLogger(t), JS: js, Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, a)
	subj := proto.Subject{Stage: proto.StageEnriched, Cluster: "c1", Node: "node-a", Source: proto.SourceKubelet}
	m := nats.NewMsg(subj.String())
	m.Data = []byte("not snappy at all")
	proto.Meta{MsgID: "bad-1", Encoding: proto.DefaultEncoding.Name(), Chunks: 1}.SetHeaders(m.Header)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	dead, err := js.Stream(ctx, proto.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	var letter *jetstream.RawStreamMsg
	waitFor(t, 10*time.Second, "the dead letter", func() bool {
		letter, err = dead.GetLastMsgForSubject(ctx, proto.DeadSubject("alerter"))
		return err == nil
	})
	if e := letter.Header.Get(proto.HeaderError); !strings.Contains(e, "malformed") {
		t.Errorf("%s = %q, want the decode error", proto.HeaderError, e)
	}
	if s := letter.Header.Get(proto.HeaderSubject); !strings.HasPrefix(s, "weir.enriched.c1.node-a.kubelet") {
		t.Errorf("%s = %q, want the enriched subject", proto.HeaderSubject, s)
	}
	if n := testutil.ToFloat64(a.m.messages.WithLabelValues("dead")); n != 1 {
		t.Errorf("dead messages %v, want 1", n)
	}
}

// TestReloadOnSignal: Reload (what SIGHUP calls) reads the files at once,
// without waiting for the change check.
func TestReloadOnSignal(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	var pubWG sync.WaitGroup
	pubWG.Go(func() { publishLoop(pubCtx, t, js, "node-a", "temperature", 80) })
	t.Cleanup(func() { stopPub(); pubWG.Wait() })
	cfg := testConfig(t, "groups:\n  - name: g\n    interval: 100ms\n    rules:\n      - alert: Hot\n        expr: series(\"temperature\") > 50\n", nil)
	cfg.ReloadCheckInterval = time.Hour
	a, err := New(cfg, Deps{Log: testLogger(t), JS: js, Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	start(t, a)
	waitFor(t, 10*time.Second, "Hot firing", func() bool {
		for _, e := range events(t, js) {
			if e.Alertname == "Hot" && e.State == "firing" {
				return true
			}
		}
		return false
	})
	if err := os.WriteFile(cfg.RuleFiles[0], []byte("groups:\n  - name: g\n    interval: 100ms\n    rules:\n      - alert: Hot\n        expr: series(\"temperature\") > 90\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Reload()
	waitFor(t, 5*time.Second, "Hot resolved under the new threshold", func() bool {
		for _, e := range events(t, js) {
			if e.Alertname == "Hot" && e.State == "resolved" {
				return true
			}
		}
		return false
	})
	if n := testutil.ToFloat64(a.m.reloads.WithLabelValues("success")); n != 1 {
		t.Errorf("successful reloads %v, want 1", n)
	}
}

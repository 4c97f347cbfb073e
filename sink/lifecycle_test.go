package sink

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/proto"
)

func TestNewChecksDeps(t *testing.T) {
	cfg := testConfig("deps", "http://backend/api/v1/write")
	_, err := New(cfg, Deps{})
	if err == nil || !strings.Contains(err.Error(), "no JetStream") || !strings.Contains(err.Error(), "stream") {
		t.Fatalf("New without deps = %v, want errors for JetStream and stream", err)
	}
	cfg.QueueConfig.MaxShards = 0
	env := newEnv(t)
	_, err = New(cfg, Deps{JS: env.js, Stream: proto.StreamRaw, Filter: proto.StreamFilter(proto.StageRaw)})
	if err == nil || !strings.Contains(err.Error(), "sinks[deps].queue_config.max_shards") {
		t.Fatalf("New with a bad config = %v, want the config error", err)
	}
}

// TestSinksShareARegistry builds several sinks on one registry, as one
// process with one sink per route does, including the same name twice, as
// a restart in process does.
func TestSinksShareARegistry(t *testing.T) {
	env := newEnv(t)
	reg := prometheus.NewRegistry()
	deps := Deps{JS: env.js, Reg: reg, Stream: proto.StreamRaw, Filter: proto.StreamFilter(proto.StageRaw)}
	var sinks []*Sink
	for _, name := range []string{"prom", "vm", "prom"} {
		s, err := New(testConfig(name, "http://backend/api/v1/write"), deps)
		if err != nil {
			t.Fatalf("New(%s): %v", name, err)
		}
		sinks = append(sinks, s)
	}
	sinks[0].metrics.samplesDropped.WithLabelValues("http_4xx").Add(3)
	sinks[2].metrics.samplesDropped.WithLabelValues("http_4xx").Add(4) // same name: same series
	sinks[1].metrics.requests.WithLabelValues("2xx").Inc()
	sinks[1].metrics.messagesDead.WithLabelValues("decode").Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	bySink := map[string]map[string]bool{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink" {
					if bySink[l.GetValue()] == nil {
						bySink[l.GetValue()] = map[string]bool{}
					}
					bySink[l.GetValue()][mf.GetName()] = true
				}
			}
			if mf.GetName() == "weir_sink_samples_dropped_total" && m.GetCounter().GetValue() != 7 {
				t.Errorf("dropped for prom = %v, want 7", m.GetCounter().GetValue())
			}
		}
	}
	for _, name := range []string{
		"weir_sink_samples_sent_total", "weir_sink_samples_retried_total", "weir_sink_request_duration_seconds",
		"weir_sink_messages_acked_total", "weir_sink_highest_sent_timestamp_seconds",
		"weir_sink_pending_messages", "weir_sink_lag_messages", "weir_sink_lag_seconds", "weir_sink_shards",
		"weir_sink_shards_desired", "weir_sink_protocol_fallbacks_total",
	} {
		if !bySink["prom"][name] || !bySink["vm"][name] {
			t.Errorf("%s missing for a sink: %v", name, bySink)
		}
	}
	if !bySink["prom"]["weir_sink_samples_dropped_total"] || !bySink["vm"]["weir_sink_requests_total"] || !bySink["vm"]["weir_sink_messages_dead_total"] {
		t.Errorf("labelled series missing: %v", bySink)
	}
}

func TestCloseIsIdempotentAndStopsRun(t *testing.T) {
	env := newEnv(t)
	s, err := New(testConfig("close", "http://127.0.0.1:1/api/v1/write"),
		Deps{JS: env.js, Stream: proto.StreamRaw, Filter: proto.StreamFilter(proto.StageRaw)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	waitFor(t, 5*time.Second, "the consumer", func() bool {
		_, err := env.js.Consumer(context.Background(), proto.StreamRaw, "sink-close")
		return err == nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run after Close = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
}

// seqMsg stands for a delivered message in tests of the held set, which
// only stores messages.
type seqMsg struct {
	jetstream.Msg
	seq uint64
}

func TestHeldSet(t *testing.T) {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "pending"})
	h := newHeldSet(gauge, 2)
	now := time.Now()
	for _, seq := range []uint64{5, 3, 9, 4} {
		if got := h.add(seq, seqMsg{seq: seq}, now, now); got != added {
			t.Fatalf("add(%d) = %v, want added", seq, got)
		}
	}
	if got := h.add(3, seqMsg{seq: 3}, now, now); got != alreadyHeld {
		t.Fatalf("add of a held sequence = %v, want alreadyHeld", got)
	}
	h.settle(3)
	h.settle(4)
	if got := metricValue(t, gauge); got != 2 {
		t.Fatalf("pending gauge = %v, want 2", got)
	}
	if got := h.add(3, seqMsg{seq: 3}, now, now); got != alreadySettled {
		t.Fatalf("add of a settled sequence = %v, want alreadySettled", got)
	}
	h.settle(5) // remembers two: 3 is forgotten
	if got := h.add(3, seqMsg{seq: 3}, now, now); got != added {
		t.Fatalf("add of a forgotten sequence = %v, want added", got)
	}
	var order []uint64
	for _, m := range h.takeAll() {
		order = append(order, m.(seqMsg).seq)
	}
	if want := []uint64{3, 9}; !slices.Equal(order, want) {
		t.Fatalf("takeAll order %v, want %v (stream order, for the nacks)", order, want)
	}
	if got := metricValue(t, gauge); got != 0 {
		t.Fatalf("pending gauge after takeAll = %v, want 0", got)
	}
}

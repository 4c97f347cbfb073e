package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// TestNATSClusterConfig starts three servers from base/nats/nats.conf with
// the environment the StatefulSet gives them (NATS_ROUTES built from the
// route password), on loopback instead of the headless Service. They must
// form one JetStream cluster that holds every Weir stream with the
// replicas and limits of base/common/weir.yaml, give each user what it
// needs and nothing more, and keep accepting scrapes with one server gone.
func TestNATSClusterConfig(t *testing.T) {
	setPasswords(t)
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://route:%s@127.0.0.1:%d", testPasswords["ROUTE_PASSWORD"], p)))
	}
	t.Setenv("NATS_ROUTES", "["+strings.Join(routes, ", ")+"]")

	var servers []*server.Server
	for i, p := range ports {
		t.Setenv("POD_NAME", fmt.Sprintf("nats-%d", i))
		opts := loadNATSConfig(t, "base/nats/nats.conf")
		if opts.ServerName != fmt.Sprintf("nats-%d", i) || opts.Cluster.Name != "weir" || len(opts.Routes) != 3 {
			t.Fatalf("nats.conf for nats-%d: name %q, cluster %q, %d routes", i, opts.ServerName, opts.Cluster.Name, len(opts.Routes))
		}
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = p
		servers = append(servers, startNATS(t, opts))
	}
	waitFor(t, 20*time.Second, "JetStream cluster elects a leader", func() (bool, string) {
		leaders := 0
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				leaders++
			}
		}
		return leaders == 1 && servers[0].JetStreamIsCurrent(), fmt.Sprintf("%d meta leaders", leaders)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The central stages create every stream, with three replicas, and
	// JetStream reserves their max_bytes within max_file_store.
	sc := streamsOf(t, "base/common/weir.yaml")
	if sc.Replicas != 3 {
		t.Fatalf("base weir.yaml: streams.replicas %d, want 3 (one per server)", sc.Replicas)
	}
	_, pipeJS := connectAs(t, servers[0], "pipeline")
	waitFor(t, 20*time.Second, "the pipeline creates its streams", func() (bool, string) {
		err := proto.EnsureStreams(ctx, pipeJS, sc)
		return err == nil, fmt.Sprint(err)
	})
	// One route stream for the sink of the base, and the alerter's stream
	// and its state: what max_file_store must leave room for.
	extra := []jetstream.StreamConfig{sc.RouteStream("prometheus")}
	alerts := sc.Streams()[len(sc.Streams())-1] // same limits as WEIR_DEAD
	alerts.Name, alerts.Subjects = "WEIR_ALERTS", []string{"weir.alerts.>"}
	extra = append(extra, alerts)
	for _, cfg := range extra {
		if _, err := pipeJS.CreateOrUpdateStream(ctx, cfg); err != nil {
			t.Fatalf("stream %s: %v", cfg.Name, err)
		}
	}
	if _, err := pipeJS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "weir_alerter_state", Replicas: 3, MaxBytes: int64(sc.MaxBytes)}); err != nil {
		t.Fatalf("alerter state bucket: %v", err)
	}

	// A collector publishes scrapes and may (re)create the streams, as every
	// stage does at start.
	collNC, collJS := connectAs(t, servers[1], "collector")
	perms := make(chan error, 4)
	collNC.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perms <- err })
	if err := proto.EnsureStreams(ctx, collJS, sc); err != nil {
		t.Fatalf("collector updates the streams: %v", err)
	}
	raw := proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: "n", Source: proto.SourceCadvisor}
	if _, err := collJS.Publish(ctx, raw.String(), []byte("scrape")); err != nil {
		t.Fatalf("collector publishes %s: %v", raw, err)
	}

	// ... and nothing else: not another stage's subjects, not a consumer
	// (it could read every scrape), not a delete.
	denied := func(what string, do func(context.Context) error) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		if err := do(c); err == nil {
			t.Errorf("collector may %s", what)
		}
	}
	enriched := proto.Subject{Stage: proto.StageEnriched, Cluster: "c", Node: "n", Source: proto.SourceCadvisor}
	denied("publish "+enriched.String(), func(c context.Context) error { _, err := collJS.Publish(c, enriched.String(), []byte("x")); return err })
	denied("create a consumer", func(c context.Context) error {
		_, err := collJS.CreateConsumer(c, proto.StreamRaw, jetstream.ConsumerConfig{Durable: "spy"})
		return err
	})
	denied("delete a stream", func(c context.Context) error { return collJS.DeleteStream(c, proto.StreamRaw) })
	select {
	case err := <-perms:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
			t.Errorf("collector error %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the server reported no permissions violation to the collector")
	}

	// One server gone (a node drained): the two others keep the quorum and
	// the collector, reconnected, keeps publishing.
	servers[2].Shutdown()
	servers[2].WaitForShutdown()
	for i := range 5 {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := collJS.Publish(c, raw.String(), []byte(fmt.Sprint("after loss ", i)))
		cancel()
		if err != nil {
			t.Fatalf("publish with one server down: %v", err)
		}
	}
	s, err := pipeJS.Stream(ctx, proto.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 6 || info.Config.Replicas != 3 {
		t.Fatalf("WEIR_RAW: %d messages and %d replicas, want 6 and 3", info.State.Msgs, info.Config.Replicas)
	}
}

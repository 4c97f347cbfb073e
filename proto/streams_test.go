package proto_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// The streams append a partition token that is the same for every scrape
// of one target, so one consumer per partition sees a target in order.
func TestStreamsAppendStablePartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.Run(t))
	cfg := proto.DefaultStreamsConfig()
	cfg.Partitions = 4
	if err := proto.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg.RouteStream("vm-long")); err != nil {
		t.Fatal(err)
	}

	published := []proto.Subject{
		{Stage: proto.StageRaw, Cluster: "c", Node: "ip-10-0-0-1.ec2.internal", Source: proto.SourceCadvisor},
		{Stage: proto.StageRaw, Cluster: "c", Node: "ip-10-0-0-1.ec2.internal", Source: proto.SourceCadvisor},
		{Stage: proto.StageEnriched, Cluster: "c", Node: "n2", Source: proto.SourceKubelet},
		{Stage: proto.StageRoute, Route: "vm-long", Cluster: "c", Node: "n3", Source: proto.SourceSummary},
	}
	for _, s := range published {
		if _, err := js.Publish(ctx, s.String(), []byte("x")); err != nil {
			t.Fatalf("publish %s: %v", s, err)
		}
	}

	var got []proto.Subject
	for _, stream := range []string{proto.StreamRaw, proto.StreamEnriched, proto.RouteStreamName("vm-long")} {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		for seq := uint64(1); ; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				break
			}
			s, err := proto.ParseSubject(m.Subject)
			if err != nil {
				t.Fatalf("stream %s stored %q: %v", stream, m.Subject, err)
			}
			got = append(got, s)
		}
	}
	if len(got) != len(published) {
		t.Fatalf("stored %d messages, want %d", len(got), len(published))
	}
	for i, s := range got {
		if !s.Partitioned || s.Partition < 0 || s.Partition >= cfg.Partitions {
			t.Errorf("%s: partition %d (partitioned %v), want 0..%d", published[i], s.Partition, s.Partitioned, cfg.Partitions-1)
		}
		s.Partition, s.Partitioned = 0, false
		if s != published[i] {
			t.Errorf("stored %+v, want %+v", s, published[i])
		}
	}
	if got[0].Partition != got[1].Partition {
		t.Errorf("two scrapes of one target in partitions %d and %d", got[0].Partition, got[1].Partition)
	}
	// A consumer of one partition sees exactly the messages of that partition.
	cons, err := js.CreateOrUpdateConsumer(ctx, proto.StreamRaw, jetstream.ConsumerConfig{
		FilterSubject: proto.PartitionFilter(proto.StageRaw, "", got[0].Partition),
		AckPolicy:     jetstream.AckNonePolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := cons.CachedInfo().NumPending; n != 2 {
		t.Errorf("partition %d holds %d messages, want 2", got[0].Partition, n)
	}
}

// A hub's WEIR_RAW sources edge streams; a stage starting must keep them.
func TestEnsureStreamsKeepsSources(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, js := natstest.Connect(t, natstest.Run(t))
	cfg := proto.DefaultStreamsConfig()
	if err := proto.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EDGE", Subjects: []string{"edge.>"}}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, proto.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	withSource := st.CachedInfo().Config
	withSource.Sources = []*jetstream.StreamSource{{Name: "EDGE"}}
	if _, err := js.UpdateStream(ctx, withSource); err != nil {
		t.Fatal(err)
	}

	cfg.MaxAge = 48 * time.Hour
	if err := proto.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != cfg.MaxAge {
		t.Errorf("max_age %s, want the new %s", info.Config.MaxAge, cfg.MaxAge)
	}
	if len(info.Config.Sources) != 1 || info.Config.Sources[0].Name != "EDGE" {
		t.Errorf("sources after EnsureStreams: %+v, want EDGE kept", info.Config.Sources)
	}
}

func TestStreamPartitionsReadsTheTransform(t *testing.T) {
	cfg := proto.DefaultStreamsConfig()
	cfg.Partitions = 7
	streams := map[string]int{cfg.RouteStream("vm").Name: proto.StreamPartitions(cfg.RouteStream("vm"))}
	for _, sc := range cfg.Streams() {
		streams[sc.Name] = proto.StreamPartitions(sc)
	}
	want := map[string]int{proto.StreamRaw: 7, proto.StreamEnriched: 7, proto.StreamDead: 0, proto.RouteStreamName("vm"): 7}
	for name, n := range want {
		if streams[name] != n {
			t.Errorf("StreamPartitions(%s) = %d, want %d", name, streams[name], n)
		}
	}
}

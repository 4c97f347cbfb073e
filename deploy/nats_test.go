package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/proto"
)

// Passwords the tests give the NATS configurations through the environment,
// as the pods do from the Secret weir-nats-users.
var testPasswords = map[string]string{
	"COLLECTOR_PASSWORD": "pcollector1",
	"PIPELINE_PASSWORD":  "ppipeline2",
	"LEAF_PASSWORD":      "pleaf3",
	"SYS_PASSWORD":       "psys4",
	"ROUTE_PASSWORD":     "proute5",
}

func setPasswords(t *testing.T) {
	for k, v := range testPasswords {
		t.Setenv(k, v)
	}
}

// loadNATSConfig parses a nats.conf of deploy/ as the server in the pod
// does, then moves it to loopback ports and a temporary store: only what
// a test cannot have (DNS names, fixed ports, volumes) changes.
func loadNATSConfig(t *testing.T, path string) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.HTTPPort = 0 // monitoring is for probes and KEDA; not needed here
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	opts.NoLog = true
	opts.PidFile = ""
	return opts
}

func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts.Clone())
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("DEBUG_NATS") != "" {
		s.SetLogger(tlog{t, opts.ServerName}, os.Getenv("DEBUG_NATS") == "2", false)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("server %s not ready", opts.ServerName)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connectAs dials s as one of the users of nats.conf.
func connectAs(t *testing.T, s *server.Server, user string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	addr := s.Addr().(*net.TCPAddr)
	nc, err := nats.Connect(fmt.Sprintf("nats://%s:%d", addr.IP, addr.Port),
		nats.UserInfo(user, os.Getenv(map[string]string{"collector": "COLLECTOR_PASSWORD", "pipeline": "PIPELINE_PASSWORD"}[user])),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// streamsOf reads the streams section of a weir.yaml of deploy/ strictly,
// over Weir's defaults, as the stages do.
func streamsOf(t *testing.T, path string) proto.StreamsConfig {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Streams yaml.Node `yaml:"streams"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	section, err := yaml.Marshal(&file.Streams)
	if err != nil {
		t.Fatal(err)
	}
	sc := proto.DefaultStreamsConfig()
	if err := config.Decode(path, section, &sc); err != nil {
		t.Fatal(err)
	}
	if err := sc.Validate(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return sc
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEdgeLeafForwardsAfterOutage runs the edge overlay's leaf server and
// the hub overlay's server from their own nats.conf files, linked by the
// leaf connection: the edge's WEIR_RAW stores what its collectors publish,
// the hub's WEIR_RAW sources it from the edge's JetStream domain. The link
// is cut for a while, the edge keeps accepting scrapes, and once the link
// is back the hub holds every one, once, in the order they were published.
func TestEdgeLeafForwardsAfterOutage(t *testing.T) {
	setPasswords(t)
	const edgeDomain = "edge-test"

	// The hub: base nats.conf with the hub overlay's leafnodes.conf, as the
	// hub's merged ConfigMap mounts them side by side. One server instead of
	// three; routes are the cluster test's business.
	hubDir := t.TempDir()
	for src, dst := range map[string]string{"base/nats/nats.conf": "nats.conf", "overlays/hub/leafnodes.conf": "leafnodes.conf"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hubDir, dst), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("POD_NAME", "nats-0")
	t.Setenv("NATS_ROUTES", "[]")
	hubOpts := loadNATSConfig(t, filepath.Join(hubDir, "nats.conf"))
	hubOpts.Cluster = server.ClusterOpts{}
	hubOpts.Routes = nil
	if hubOpts.LeafNode.Port != 7422 || len(hubOpts.LeafNode.Users) != 1 || !hubOpts.LeafNode.NoAdvertise {
		t.Fatalf("hub leafnodes: port %d, %d users, no_advertise %v; want 7422, the leaf user, true",
			hubOpts.LeafNode.Port, len(hubOpts.LeafNode.Users), hubOpts.LeafNode.NoAdvertise)
	}
	hubOpts.LeafNode.Host = "127.0.0.1"
	hubOpts.LeafNode.Port = freePort(t)
	hub := startNATS(t, hubOpts)
	// The edge reaches the hub through a link the test can cut.
	wire := newLink(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(hubOpts.LeafNode.Port)))

	// The edge: the leaf's nats.conf with the environment its StatefulSet sets.
	t.Setenv("SERVER_NAME", edgeDomain+"-nats-0")
	t.Setenv("WEIR_EDGE_DOMAIN", edgeDomain)
	t.Setenv("HUB_LEAF_URL", fmt.Sprintf("nats-leaf://leaf:%s@%s", testPasswords["LEAF_PASSWORD"], wire.addr))
	leafOpts := loadNATSConfig(t, "overlays/edge/leaf/nats.conf")
	if leafOpts.JetStreamDomain != edgeDomain || len(leafOpts.LeafNode.Remotes) != 1 {
		t.Fatalf("edge nats.conf: domain %q, %d remotes", leafOpts.JetStreamDomain, len(leafOpts.LeafNode.Remotes))
	}
	leafOpts.LeafNode.ReconnectInterval = 200 * time.Millisecond // 2s in the pod; the test waits less
	leaf := startNATS(t, leafOpts)
	linked := func() (bool, string) {
		return leaf.NumLeafNodes() == 1, fmt.Sprintf("%d leaf connections", leaf.NumLeafNodes())
	}
	waitFor(t, 10*time.Second, "leaf connects to hub", linked)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// The edge's collectors create their streams, as every stage does at
	// start, with the limits of the edge overlay's weir.yaml.
	edgeStreams := streamsOf(t, "overlays/edge/weir.yaml")
	_, edgeJS := connectAs(t, leaf, "collector")
	if err := proto.EnsureStreams(ctx, edgeJS, edgeStreams); err != nil {
		t.Fatalf("collector creates the edge streams: %v", err)
	}

	// The hub's WEIR_RAW, as the stages create it from the base weir.yaml
	// (one replica here: one server), sourcing the edge's.
	hubStreams := streamsOf(t, "base/common/weir.yaml")
	hubStreams.Replicas = 1
	raw := hubStreams.Streams()[0]
	if raw.Name != proto.StreamRaw {
		t.Fatalf("first stream %s", raw.Name)
	}
	raw.Sources = []*jetstream.StreamSource{{Name: proto.StreamRaw, Domain: edgeDomain}}
	_, hubJS := connectAs(t, hub, "pipeline")
	if _, err := hubJS.CreateStream(ctx, raw); err != nil {
		t.Fatalf("hub WEIR_RAW: %v", err)
	}

	// Collectors on three nodes, two sources each, publishing in turn.
	var published []string // Nats-Msg-Id in publish order
	publish := func(n int) {
		t.Helper()
		for range n {
			i := len(published)
			subj := proto.Subject{Stage: proto.StageRaw, Cluster: "edge-cluster", Node: fmt.Sprintf("node-%d", i%3),
				Source: []proto.Source{proto.SourceCadvisor, proto.SourceKubelet}[i%2]}
			id := strconv.Itoa(i)
			msg := nats.NewMsg(subj.String())
			msg.Header.Set(jetstream.MsgIDHeader, id)
			msg.Data = []byte(id)
			if _, err := edgeJS.PublishMsg(ctx, msg); err != nil {
				t.Fatalf("publish %d at the edge: %v", i, err)
			}
			published = append(published, id)
		}
	}
	hubCount := func(js jetstream.JetStream) func() (bool, string) {
		return func() (bool, string) {
			s, err := js.Stream(ctx, proto.StreamRaw)
			if err != nil {
				return false, err.Error()
			}
			info, err := s.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			src := ""
			for _, si := range info.Sources {
				src += fmt.Sprintf(" source %s lag %d active %s error %v", si.Name, si.Lag, si.Active, si.Error)
			}
			return info.State.Msgs == uint64(len(published)), fmt.Sprintf("hub has %d of %d;%s", info.State.Msgs, len(published), src)
		}
	}

	publish(40)
	waitFor(t, 15*time.Second, "edge scrapes reach the hub", hubCount(hubJS))

	// The link goes down for a while; the edge keeps storing.
	wire.Cut()
	waitFor(t, 5*time.Second, "leaf notices the link is down", func() (bool, string) {
		return leaf.NumLeafNodes() == 0, fmt.Sprintf("%d leaf connections", leaf.NumLeafNodes())
	})
	for range 4 {
		publish(30)
		time.Sleep(100 * time.Millisecond) // the outage lasts a while
	}
	if all, state := hubCount(hubJS)(); leaf.NumLeafNodes() != 0 || all {
		t.Fatalf("scrapes reached the hub while the link was down: %s", state)
	}

	// The link is back: the leaf reconnects and the source catches up.
	wire.Restore()
	waitFor(t, 10*time.Second, "leaf reconnects", linked)
	start := time.Now()
	waitFor(t, 30*time.Second, "the hub catches up", hubCount(hubJS))
	t.Logf("caught up in %s", time.Since(start))
	publish(20) // and new scrapes flow again
	waitFor(t, 15*time.Second, "new scrapes reach the hub", hubCount(hubJS))

	// Every scrape once, in publish order, with the subject the edge stored
	// (partition token included).
	cons, err := hubJS.OrderedConsumer(ctx, proto.StreamRaw, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range published {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("hub message %d of %d: %v", i, len(published), err)
		}
		if got := msg.Headers().Get(jetstream.MsgIDHeader); got != want {
			t.Fatalf("hub message %d has id %q, want %q: out of order or duplicated", i, got, want)
		}
		subj, err := proto.ParseSubject(msg.Subject())
		if err != nil || !subj.Partitioned || subj.Partition >= edgeStreams.Partitions {
			t.Fatalf("hub message %d subject %q: %+v %v; want the edge's partitioned subject", i, msg.Subject(), subj, err)
		}
	}
	if info, err := cons.Info(ctx); err != nil || info.NumPending != 0 {
		t.Fatalf("hub holds more than was published: %+v %v", info, err)
	}
}

type tlog struct {
	t    *testing.T
	name string
}

func (l tlog) Noticef(f string, a ...any) { l.t.Logf(l.name+" "+f, a...) }
func (l tlog) Warnf(f string, a ...any)   { l.t.Logf(l.name+" WARN "+f, a...) }
func (l tlog) Fatalf(f string, a ...any)  { l.t.Logf(l.name+" FATAL "+f, a...) }
func (l tlog) Errorf(f string, a ...any)  { l.t.Logf(l.name+" ERR "+f, a...) }
func (l tlog) Debugf(f string, a ...any)  { l.t.Logf(l.name+" DBG "+f, a...) }
func (l tlog) Tracef(f string, a ...any)  {}

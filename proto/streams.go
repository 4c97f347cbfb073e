package proto

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/config"
)

// Stream names. Each route has its own stream, named by RouteStreamName.
const (
	StreamRaw      = "WEIR_RAW"
	StreamEnriched = "WEIR_ENRICHED"
	StreamDead     = "WEIR_DEAD"
)

// RouteStreamName is the stream of one route: WEIR_ROUTE_<ROUTE>. Route
// names are validated by the router to [a-z0-9_-].
func RouteStreamName(route string) string {
	return "WEIR_ROUTE_" + strings.ToUpper(route)
}

// StreamsConfig sets the limits of every Weir stream. Retention is by
// limits: the oldest messages go first once max_age or max_bytes is reached.
type StreamsConfig struct {
	MaxAge     time.Duration   `yaml:"max_age"`
	MaxBytes   config.ByteSize `yaml:"max_bytes"`
	Replicas   int             `yaml:"replicas"`
	Duplicates time.Duration   `yaml:"duplicate_window"`
	// Partitions is how many partitions the stream splits every target's
	// subjects into: the most replicas of one stage that share the work.
	// Changing it on a running pipeline may reorder a target's scrapes once.
	// A file that leaves it unset gets 12, and a `weir all` running the
	// whole pipeline on a new store one per core, at most 12.
	Partitions int `yaml:"partitions"`
}

// DefaultStreamsConfig keeps a day of data, at most 10 GiB per stream.
func DefaultStreamsConfig() StreamsConfig {
	return StreamsConfig{MaxAge: 24 * time.Hour, MaxBytes: 10 << 30, Replicas: 1, Duplicates: 2 * time.Minute, Partitions: 12}
}

// Validate checks the limits.
func (c StreamsConfig) Validate() error {
	switch {
	case c.MaxAge <= 0:
		return fmt.Errorf("streams.max_age: must be positive, got %s", c.MaxAge)
	case c.MaxBytes <= 0:
		return fmt.Errorf("streams.max_bytes: must be positive, got %d", c.MaxBytes)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("streams.replicas: must be 1 to 5, got %d", c.Replicas)
	case c.Duplicates <= 0 || c.Duplicates > c.MaxAge:
		return fmt.Errorf("streams.duplicate_window: must be positive and at most max_age, got %s", c.Duplicates)
	case c.Partitions < 1 || c.Partitions > 1024:
		return fmt.Errorf("streams.partitions: must be 1 to 1024, got %d", c.Partitions)
	}
	return nil
}

// Streams returns the definitions of the streams every pipeline has; each
// route adds its own with RouteStream.
func (c StreamsConfig) Streams() []jetstream.StreamConfig {
	dead := c.stream(StreamDead, DeadSubject("*"), "Messages a stage could not decode, with the error in a header")
	dead.Subjects = []string{StreamFilter("dead")}
	return []jetstream.StreamConfig{
		c.partitioned(c.stream(StreamRaw, StreamFilter(StageRaw), "Scrapes as the collectors read them"), Prefix+"."+StageRaw),
		c.partitioned(c.stream(StreamEnriched, StreamFilter(StageEnriched), "Scrapes with cluster, node and workload labels"), Prefix+"."+StageEnriched),
		dead,
	}
}

// RouteStream is the stream of one route, with its own limits so that a
// backend that is down for hours keeps its data without holding up others.
func (c StreamsConfig) RouteStream(route string) jetstream.StreamConfig {
	sc := c.stream(RouteStreamName(route), RouteFilter(route), "Series kept by route "+route)
	return c.partitioned(sc, Prefix+"."+StageRoute+"."+EscapeToken(route))
}

func (c StreamsConfig) stream(name, subject, desc string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: desc,
		Subjects:    []string{subject},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		MaxBytes:    int64(c.MaxBytes),
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
	}
}

// partitioned makes the server append a partition token, a hash of
// cluster, node and source, to every subject prefix.<cluster>.<node>.<source>.
func (c StreamsConfig) partitioned(sc jetstream.StreamConfig, prefix string) jetstream.StreamConfig {
	sc.SubjectTransform = &jetstream.SubjectTransformConfig{
		Source:      prefix + ".*.*.*",
		Destination: fmt.Sprintf("%s.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}%s%d,1,2,3)}}", prefix, partitionFunc, c.Partitions),
	}
	return sc
}

const partitionFunc = ".{{partition("

// StreamPartitions returns how many partitions a stream made by
// StreamsConfig splits its subjects into, or 0 for a stream it does not
// partition.
func StreamPartitions(sc jetstream.StreamConfig) int {
	if sc.SubjectTransform == nil {
		return 0
	}
	_, args, ok := strings.Cut(sc.SubjectTransform.Destination, partitionFunc)
	if !ok {
		return 0
	}
	n, _, _ := strings.Cut(args, ",")
	partitions, err := strconv.Atoi(n)
	if err != nil {
		return 0
	}
	return partitions
}

// EnsureStreams creates the streams, or updates them to the configured
// limits. It is safe to call from every replica of every stage at start.
func EnsureStreams(ctx context.Context, js jetstream.StreamManager, c StreamsConfig) error {
	for _, sc := range c.Streams() {
		if err := EnsureStream(ctx, js, sc); err != nil {
			return err
		}
	}
	return nil
}

// EnsureStream creates one stream or updates it to sc, keeping the sources
// and mirror an operator added: a hub's WEIR_RAW sources the edge clusters'
// streams, and a stage starting must not cut those links.
func EnsureStream(ctx context.Context, js jetstream.StreamManager, sc jetstream.StreamConfig) error {
	if st, err := js.Stream(ctx, sc.Name); err == nil {
		cur := st.CachedInfo().Config
		if len(sc.Sources) == 0 {
			sc.Sources = cur.Sources
		}
		if sc.Mirror == nil {
			sc.Mirror = cur.Mirror
		}
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
	}
	return nil
}

// ConsumerConfig is a durable pull consumer with explicit acks. AckWait is
// how long a stage may hold a message before the server redelivers it; a
// stage that needs longer (a sink retrying a backend) extends it with
// InProgress.
func ConsumerConfig(durable, filter string, ackWait time.Duration, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
	}
}

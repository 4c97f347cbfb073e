package proto

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/config"
)

// Stream names.
const (
	StreamRaw  = "WEIR_RAW"
	StreamDead = "WEIR_DEAD"
)

// StreamsConfig sets the limits of every Weir stream. Retention is by
// limits: the oldest messages go first once max_age or max_bytes is reached.
type StreamsConfig struct {
	MaxAge     time.Duration   `yaml:"max_age"`
	MaxBytes   config.ByteSize `yaml:"max_bytes"`
	Replicas   int             `yaml:"replicas"`
	Duplicates time.Duration   `yaml:"duplicate_window"`
}

// DefaultStreamsConfig keeps a day of data, at most 10 GiB per stream.
func DefaultStreamsConfig() StreamsConfig {
	return StreamsConfig{MaxAge: 24 * time.Hour, MaxBytes: 10 << 30, Replicas: 1, Duplicates: 2 * time.Minute}
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
	}
	return nil
}

// Streams returns the definitions of every stream Weir uses.
func (c StreamsConfig) Streams() []jetstream.StreamConfig {
	data := func(name, stage, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{StreamFilter(stage)},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      c.MaxAge,
			MaxBytes:    int64(c.MaxBytes),
			Replicas:    c.Replicas,
			Duplicates:  c.Duplicates,
		}
	}
	return []jetstream.StreamConfig{
		data(StreamRaw, StageRaw, "Scrapes as the collectors read them"),
		data(StreamDead, "dead", "Messages a stage could not decode, with the error in a header"),
	}
}

// EnsureStreams creates the streams, or updates them to the configured
// limits. It is safe to call from every replica of every stage at start.
func EnsureStreams(ctx context.Context, js jetstream.StreamManager, c StreamsConfig) error {
	for _, sc := range c.Streams() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
		}
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

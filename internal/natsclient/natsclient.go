// Package natsclient connects the stages to NATS JetStream.
package natsclient

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishAsyncTimeout bounds how long an async publish waits for its ack.
const publishAsyncTimeout = 30 * time.Second

// Connect dials url and returns the connection with its JetStream context.
// It retries forever in the background once connected, and logs every
// disconnect and reconnect. opts come after those defaults, e.g.
// nats.InProcessServer for the embedded server of `weir all`.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	// An async publish not acked within this is failed and forgotten by
	// JetStream itself, so that a collector publishing while NATS is away
	// never accumulates futures; the collector retries it from its buffer.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishAsyncTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

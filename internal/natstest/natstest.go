// Package natstest runs a real NATS JetStream server inside a test.
package natstest

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/broker"
	"github.com/weirmetrics/weir/internal/natsclient"
)

// Run starts a JetStream server on a free loopback port with its store in a
// temporary directory, and shuts it down when the test ends.
func Run(t testing.TB) *server.Server {
	t.Helper()
	return RunIn(t, t.TempDir())
}

// RunIn is Run with a given store, so that a test can restart a server on
// the same data.
func RunIn(t testing.TB, storeDir string) *server.Server {
	t.Helper()
	s, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: -1, StoreDir: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s and closes the connection when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := natsclient.Connect(s.ClientURL(), t.Name(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// Acked reports whether the consumer acked every message stored under its
// filter subject. The consumer's NumPending is not enough: the server adds
// a stored message to it asynchronously, after the publish was acknowledged,
// so right after a publish it can still read 0.
func Acked(ctx context.Context, js jetstream.JetStream, info *jetstream.ConsumerInfo) (bool, error) {
	if info.NumAckPending != 0 || info.NumPending != 0 {
		return false, nil
	}
	s, err := js.Stream(ctx, info.Stream)
	if err != nil {
		return false, err
	}
	last, err := s.GetLastMsgForSubject(ctx, cmp.Or(info.Config.FilterSubject, ">"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return info.AckFloor.Stream >= last.Sequence, nil
}

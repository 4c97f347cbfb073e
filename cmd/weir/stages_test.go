package main

import (
	"context"
	"log/slog"
	"runtime"
	"testing"

	"github.com/weirmetrics/weir/internal/cli"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// `weir all` splits a new store into one partition per core, but keeps
// the partitions of streams that exist: messages in a partition no
// consumer reads any more would never be delivered.
func TestPartitionsForAllKeepsExistingStreams(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.Run(t))
	p := &process{Process: &cli.Process{JS: js, Log: slog.New(slog.DiscardHandler)}}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	if n, err := p.partitionsForAll(ctx); err != nil || n != 3 {
		t.Fatalf("new store, 3 cores: partitions %d (%v), want 3", n, err)
	}
	streams := proto.DefaultStreamsConfig()
	streams.Partitions = 5
	if err := proto.EnsureStreams(ctx, js, streams); err != nil {
		t.Fatal(err)
	}
	if n, err := p.partitionsForAll(ctx); err != nil || n != 5 {
		t.Fatalf("streams made with 5 partitions: partitions %d (%v), want 5", n, err)
	}
}

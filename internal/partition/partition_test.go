package partition_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAssignSpreadsEvenlyAndCoversAll(t *testing.T) {
	members := []string{"c", "a", "b", "a"}
	var all []int
	for _, m := range []string{"a", "b", "c"} {
		mine := partition.Assign(members, m, 12)
		if len(mine) != 4 {
			t.Errorf("%s gets %v, want 4 partitions", m, mine)
		}
		all = append(all, mine...)
	}
	slices.Sort(all)
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; !slices.Equal(all, want) {
		t.Errorf("partitions covered %v, want %v", all, want)
	}
	if got := partition.Assign(members, "stranger", 12); got != nil {
		t.Errorf("a non-member gets %v", got)
	}
}

// startStreams runs a NATS server with Weir's streams in partitions
// partitions, and returns a JetStream client and a context that ends with
// the test, or after 30 s.
func startStreams(t *testing.T, partitions int) (*server.Server, jetstream.JetStream, context.Context) {
	t.Helper()
	s := natstest.Run(t)
	_, js := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	streams := proto.DefaultStreamsConfig()
	streams.Partitions = partitions
	if err := proto.EnsureStreams(ctx, js, streams); err != nil {
		t.Fatal(err)
	}
	return s, js, ctx
}

// ledger records what members did, per subject, in order.
type ledger struct {
	mu      sync.Mutex
	acked   map[string][]int // subject → sequence numbers acked
	members map[string]map[int]bool
	taken   map[string]int // member → partitions it started working on
}

func (l *ledger) take(member string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.taken[member]++
}

func (l *ledger) hasTaken(members ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range members {
		if l.taken[m] == 0 {
			return false
		}
	}
	return true
}

func (l *ledger) ack(member, subject string, partition, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[subject] = append(l.acked[subject], n)
	if l.members[member] == nil {
		l.members[member] = map[int]bool{}
	}
	l.members[member][partition] = true
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.acked {
		n += len(s)
	}
	return n
}

// work acks each message after recording it; on cancel it stops pulling
// and finishes what it holds, as every stage should.
func work(l *ledger, member string) partition.Work {
	return func(ctx context.Context, p int, cons jetstream.Consumer) error {
		l.take(member)
		it, err := cons.Messages(jetstream.PullMaxMessages(8))
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); it.Drain() }()
		for {
			msg, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
					return nil
				}
				return err
			}
			time.Sleep(time.Millisecond) // a stage's work, so that pulls run ahead
			n, _ := strconv.Atoi(string(msg.Data()))
			subj, _ := proto.ParseSubject(msg.Subject())
			subj.Partition, subj.Partitioned = 0, false
			// Record before the ack, as a stage's effect comes before its
			// ack: a member that dies in between has it redone.
			l.ack(member, subj.String(), p, n)
			_ = msg.DoubleAck(context.Background())
		}
	}
}

// Three members share the partitions; one dies without a goodbye (its
// connection closed mid-stream), another leaves cleanly: every message is
// acked at least once and each target's messages are acked in order.
func TestMembersShareWorkAndKeepOrderThroughFailures(t *testing.T) {
	const partitions = 6
	s, js, ctx := startStreams(t, partitions)

	l := &ledger{acked: map[string][]int{}, members: map[string]map[int]bool{}, taken: map[string]int{}}
	type member struct {
		name   string
		nc     *nats.Conn
		cancel context.CancelFunc
		done   chan error
	}
	start := func(name string) *member {
		nc, js := natstest.Connect(t, s)
		mctx, mcancel := context.WithCancel(ctx)
		m := &member{name: name, nc: nc, cancel: mcancel, done: make(chan error, 1)}
		go func() {
			m.done <- partition.Run(mctx, js, partition.Config{
				Stream: proto.StreamRaw, Stage: proto.StageRaw, Durable: "test",
				Partitions: partitions, Member: name, Heartbeat: 200 * time.Millisecond,
				Consumer: proto.ConsumerConfig("", "", 2*time.Second, 64),
				Log:      slog.New(slog.DiscardHandler),
			}, work(l, name))
		}()
		return m
	}

	const targets, perTarget = 24, 60
	publish := func(from, to int) {
		for n := from; n < to; n++ {
			for i := range targets {
				subj := proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: fmt.Sprintf("node-%d", i), Source: proto.SourceCadvisor}
				if _, err := js.Publish(ctx, subj.String(), []byte(strconv.Itoa(n))); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if ctx.Err() != nil {
				for p := range partitions {
					ci, err := js.Consumer(context.Background(), proto.StreamRaw, partition.ConsumerName("test", p))
					if err == nil {
						info := ci.CachedInfo()
						t.Logf("%s: ack pending %d, pending %d, redelivered %d, waiting %d, groups %+v", info.Name, info.NumAckPending, info.NumPending, info.NumRedelivered, info.NumWaiting, info.PriorityGroups)
					}
				}
				t.Fatalf("timed out waiting for %s; %d acked", what, l.total())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	a, b, c := start("a"), start("b"), start("c")
	// The first to start takes every partition at once; the others get
	// their share a heartbeat or two later. Published before that, the
	// first third could all go to one member on a busy machine.
	waitFor("every member to take partitions", func() bool { return l.hasTaken("a", "b", "c") })
	publish(0, perTarget/3)
	waitFor("the first third", func() bool { return l.total() >= targets*perTarget/3 })

	published := make(chan struct{})
	go func() { publish(perTarget/3, 2*perTarget/3); close(published) }()
	waitFor("the second third to flow", func() bool { return l.total() >= targets*(perTarget/3+2) })
	a.nc.Close() // a dies mid-stream: no goodbye, its messages unacked
	<-published
	waitFor("the second third", func() bool { return l.total() >= targets*2*perTarget/3 })

	b.cancel() // b leaves cleanly
	if err := <-b.done; err != nil {
		t.Errorf("member b: %v", err)
	}
	publish(2*perTarget/3, perTarget)
	waitFor("everything", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i := range targets {
			subj := proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: fmt.Sprintf("node-%d", i), Source: proto.SourceCadvisor}
			if !slices.Contains(l.acked[subj.String()], perTarget-1) {
				return false
			}
		}
		return true
	})
	c.cancel()
	if err := <-c.done; err != nil {
		t.Errorf("member c: %v", err)
	}
	a.cancel()
	<-a.done

	l.mu.Lock()
	defer l.mu.Unlock()
	for subj, seq := range l.acked {
		// At least once: what a dying member did may be redone by its
		// successor, but a message is first done only after all older ones.
		var first []int
		seen := map[int]bool{}
		for _, n := range seq {
			if !seen[n] {
				seen[n] = true
				first = append(first, n)
			}
		}
		if !slices.IsSorted(first) {
			t.Errorf("%s done out of order: %v", subj, seq)
		}
		if len(first) != perTarget {
			t.Errorf("%s: %d distinct messages done, want %d", subj, len(first), perTarget)
		}
	}
	for _, name := range []string{"a", "b", "c"} {
		if len(l.members[name]) == 0 {
			t.Errorf("member %s worked on no partition", name)
		}
	}
}

// A member that starts alone takes its partitions at once, not a heartbeat
// later: in `weir all` every stage is such a member, and the first scrapes
// would wait for it.
func TestLoneMemberStartsAtOnce(t *testing.T) {
	_, js, ctx := startStreams(t, 2)
	const heartbeat = 10 * time.Second
	l := &ledger{acked: map[string][]int{}, members: map[string]map[int]bool{}, taken: map[string]int{}}
	mctx, mcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- partition.Run(mctx, js, partition.Config{
			Stream: proto.StreamRaw, Stage: proto.StageRaw, Durable: "lone",
			Partitions: 2, Member: "only", Heartbeat: heartbeat,
			Consumer: proto.ConsumerConfig("", "", 2*time.Second, 64),
			Log:      slog.New(slog.DiscardHandler),
		}, work(l, "only"))
	}()
	started := time.Now()
	for i := range 4 {
		subj := proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: fmt.Sprintf("node-%d", i), Source: proto.SourceCadvisor}
		if _, err := js.Publish(ctx, subj.String(), []byte("0")); err != nil {
			t.Fatal(err)
		}
	}
	for l.total() < 4 && time.Since(started) < heartbeat {
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(started); l.total() < 4 || took > heartbeat/2 {
		t.Errorf("%d of 4 messages done after %s; a lone member should not wait for a heartbeat of %s", l.total(), took.Round(time.Millisecond), heartbeat)
	}
	mcancel()
	if err := <-done; err != nil {
		t.Errorf("member: %v", err)
	}
}

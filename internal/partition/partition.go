// Package partition lets the replicas of one stage share a partitioned
// stream without breaking per-target order.
//
// Every Weir data stream appends a partition token to its subjects, the
// same for every scrape of one target (proto.StreamsConfig.Partitions). A
// stage reads each partition through its own durable consumer,
// "<durable>-p<NN>", and Run decides which of them this replica works on:
//
//   - Members announce themselves in a key-value bucket with a short TTL;
//     every member sees the same sorted list and takes the partitions whose
//     number modulo the member count is its own index, so the work is
//     spread evenly and a dead member's share moves within one TTL.
//   - Assignment alone could briefly overlap while members disagree, so
//     every partition consumer also uses a pinned priority group: the server
//     delivers a partition to one client at a time. A member that gives a
//     partition up stops its work, waits for it to finish its in-flight
//     messages, and only then unpins, so its successor starts after it.
//   - A successor that finds messages still unacknowledged by a member that
//     died waits until their ack wait has passed before pulling: the server
//     then redelivers them before anything newer, in stream order.
package partition

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// Bucket is the key-value bucket where members announce themselves.
const Bucket = "weir_members"

// Group is the priority group of every partition consumer.
const Group = "weir"

// Config says which stream a stage reads and how.
type Config struct {
	Stream     string // the stream to read, e.g. proto.StreamRaw
	Stage      string // the stage that wrote it: proto.StageRaw, StageEnriched or StageRoute
	Route      string // the route, when Stage is proto.StageRoute
	Durable    string // consumer names are Durable-pNN; members of one Durable share the work
	Partitions int    // proto.StreamsConfig.Partitions
	// Member names this replica; the host name and process id by default.
	Member string
	// Consumer is the template of every partition consumer: AckWait,
	// MaxAckPending and so on. Durable, FilterSubject and the priority
	// group are set by Run.
	Consumer jetstream.ConsumerConfig
	// Heartbeat is how often a member renews its announcement; a member
	// silent for three heartbeats is gone. 2s by default.
	Heartbeat time.Duration
	Log       *slog.Logger
}

// Work processes one partition until ctx ends. It should then stop
// pulling (Drain) and finish the messages it already holds: its successor
// starts once they are all acknowledged. A message it cannot finish it may
// Nak; the successor then waits for that message's ack wait to pass, as it
// does after a member died, so that nothing newer overtakes it.
type Work func(ctx context.Context, partition int, cons jetstream.Consumer) error

// ConsumerName is the durable consumer of one partition.
func ConsumerName(durable string, partition int) string {
	return fmt.Sprintf("%s-p%02d", durable, partition)
}

func (c *Config) setDefaults() error {
	var errs []error
	if c.Stream == "" {
		errs = append(errs, errors.New("partition: empty stream"))
	}
	if c.Durable == "" || strings.ContainsAny(c.Durable, ".*> ") {
		errs = append(errs, fmt.Errorf("partition: bad durable name %q", c.Durable))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partition: partitions must be at least 1, got %d", c.Partitions))
	}
	if c.Member == "" {
		host, _ := os.Hostname()
		c.Member = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Run announces this member, keeps its share of the partitions assigned,
// and runs work for each assigned partition in its own goroutine. It
// returns once ctx ends and every work has returned, or on the first
// error of a work or of the announcement.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config, work Work) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Live replicas of each Weir stage, for partition assignment",
		TTL:         3 * cfg.Heartbeat,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("partition: members bucket: %w", err)
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return fmt.Errorf("partition: stream %s: %w", cfg.Stream, err)
	}
	r := &runner{cfg: cfg, js: js, kv: kv, stream: stream, work: work,
		key: memberKey(cfg.Durable, cfg.Member), running: map[int]*running{},
		errs: make(chan error, cfg.Partitions)}
	return r.run(ctx)
}

type runner struct {
	cfg     Config
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	stream  jetstream.Stream
	work    Work
	key     string
	running map[int]*running
	// lastView is the sorted member list of the previous heartbeat.
	lastView []string
	errs     chan error
	wg       sync.WaitGroup
}

type running struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *runner) run(ctx context.Context) error {
	defer r.stopAll()
	tick := time.NewTicker(r.cfg.Heartbeat)
	defer tick.Stop()
	for {
		if err := r.rebalance(ctx); err != nil && ctx.Err() == nil {
			// A NATS outage: keep the current assignment, retry next beat.
			r.cfg.Log.Warn("partition assignment failed", "consumer", r.cfg.Durable, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-r.errs:
			return err
		case <-tick.C:
		}
	}
}

// rebalance renews the announcement and starts or stops works so that this
// member runs exactly its share.
func (r *runner) rebalance(ctx context.Context) error {
	if _, err := r.kv.PutString(ctx, r.key, r.cfg.Member); err != nil {
		return fmt.Errorf("announce %s: %w", r.key, err)
	}
	members, err := r.members(ctx)
	if err != nil {
		return err
	}
	slices.Sort(members)
	// Give partitions up at once, but take new ones only once the view of
	// the members has held for a heartbeat: every member lists them at
	// every beat, so by then the others have given up what is now ours.
	// A member that starts alone has no one to wait for, and starting a
	// heartbeat late would hold every scrape up that long; a member
	// starting beside it is kept out by the pin until the next beat
	// hands the partitions over.
	stable := slices.Equal(members, r.lastView) || (r.lastView == nil && len(members) == 1)
	r.lastView = members
	mine := Assign(members, r.cfg.Member, r.cfg.Partitions)
	var revoked []int
	for p, w := range r.running {
		if !slices.Contains(mine, p) {
			w.cancel() // all at once: each may take a while to finish
			revoked = append(revoked, p)
		}
	}
	for _, p := range revoked {
		r.release(ctx, p)
	}
	for _, p := range mine {
		if !stable {
			break
		}
		if w := r.running[p]; w != nil {
			select {
			case <-w.done: // ended on its own (an error was reported); restart
			default:
				continue
			}
		}
		if err := r.start(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) members(ctx context.Context) ([]string, error) {
	lister, err := r.kv.ListKeysFiltered(ctx, escape(r.cfg.Durable)+".*")
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	defer lister.Stop() // its error only says the listing already ended
	var members []string
	for k := range lister.Keys() {
		members = append(members, unescape(k[strings.IndexByte(k, '.')+1:]))
	}
	if !slices.Contains(members, r.cfg.Member) {
		members = append(members, r.cfg.Member)
	}
	return members, nil
}

// Assign returns the partitions that member works on among members.
func Assign(members []string, member string, partitions int) []int {
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	i := slices.Index(sorted, member)
	if i < 0 {
		return nil
	}
	var mine []int
	for p := i; p < partitions; p += len(sorted) {
		mine = append(mine, p)
	}
	return mine
}

func (r *runner) start(ctx context.Context, p int) error {
	cc := r.cfg.Consumer
	cc.Durable = ConsumerName(r.cfg.Durable, p)
	cc.Name = ""
	cc.FilterSubject = proto.PartitionFilter(r.cfg.Stage, r.cfg.Route, p)
	cc.FilterSubjects = nil
	cc.PriorityPolicy = jetstream.PriorityPolicyPinned
	cc.PriorityGroups = []string{Group}
	if cc.PinnedTTL == 0 {
		cc.PinnedTTL = 5 * r.cfg.Heartbeat
	}
	cons, err := r.stream.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &running{cancel: cancel, done: make(chan struct{})}
	r.running[p] = w
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(w.done)
		if err := r.awaitPredecessor(wctx, cons, cc.AckWait); err != nil {
			return
		}
		r.cfg.Log.Info("partition taken", "consumer", cc.Durable, "member", r.cfg.Member)
		if err := r.work(wctx, p, pinned{cons, PullExpiry(cc.PinnedTTL)}); err != nil && wctx.Err() == nil {
			select {
			case r.errs <- fmt.Errorf("%s: %w", cc.Durable, err):
			default:
			}
		}
	}()
	return nil
}

// awaitPredecessor waits while messages of this partition are still
// unacknowledged by a previous member: pulling earlier would get newer
// messages before those. A member that gave the partition up finishes its
// messages within moments; those of a member that died are redelivered
// once their ack wait has passed, before anything newer, in stream order.
func (r *runner) awaitPredecessor(ctx context.Context, cons jetstream.Consumer, ackWait time.Duration) error {
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	// The server queues expired messages for redelivery on a timer of its
	// own, a little after their ack wait: leave it time to.
	expired := ackWait + max(ackWait/4, 500*time.Millisecond)
	poll := time.NewTicker(r.cfg.Heartbeat / 4)
	defer poll.Stop()
	logged := false
	for {
		// Another client still pinned is a member finishing its messages, or
		// one that died and whose pin has not expired yet.
		info, err := cons.Info(ctx)
		if err == nil && !pinnedElsewhere(info) && (info.NumAckPending == 0 ||
			info.Delivered.Last == nil || time.Since(*info.Delivered.Last) > expired) {
			return nil
		}
		if err == nil && !logged {
			logged = true
			r.cfg.Log.Info("waiting for a previous member's messages",
				"consumer", info.Name, "pending", info.NumAckPending, "pinned", pinnedElsewhere(info))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
}

// awaitAcks waits, at most a heartbeat, for the server to have applied the
// acks of a work that ended: acks travel asynchronously, and a successor
// must not find them still pending.
func (r *runner) awaitAcks(ctx context.Context, consumer string) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Heartbeat)
	defer cancel()
	for {
		c, err := r.stream.Consumer(ctx, consumer)
		if err != nil || c.CachedInfo().NumAckPending == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.Heartbeat / 20):
		}
	}
}

// pinnedElsewhere reports whether a client holds the partition's pin; it is
// called before this member has pulled, so the client is another one.
func pinnedElsewhere(info *jetstream.ConsumerInfo) bool {
	for _, g := range info.PriorityGroups {
		if g.Group == Group && g.PinnedClientID != "" {
			return true
		}
	}
	return false
}

// release waits for the cancelled work on p and then unpins the consumer,
// so that the next owner starts at once instead of after the pin's TTL.
func (r *runner) release(ctx context.Context, p int) {
	<-r.running[p].done
	delete(r.running, p)
	name := ConsumerName(r.cfg.Durable, p)
	r.awaitAcks(ctx, name)
	if err := r.stream.UnpinConsumer(ctx, name, Group); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		r.cfg.Log.Debug("unpin failed; the pin expires on its own", "consumer", name, "err", err)
	}
	r.cfg.Log.Info("partition released", "consumer", name, "member", r.cfg.Member)
}

// stopAll ends every work and withdraws the announcement, so that the
// other members take the partitions over at their next heartbeat.
func (r *runner) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, w := range r.running {
		w.cancel()
	}
	r.wg.Wait()
	if err := r.kv.Delete(ctx, r.key); err != nil {
		r.cfg.Log.Debug("withdraw announcement", "key", r.key, "err", err)
	}
	for p := range r.running {
		_ = r.stream.UnpinConsumer(ctx, ConsumerName(r.cfg.Durable, p), Group)
	}
}

// pinned is a partition consumer whose pulls all name the priority group.
// Its long-lived pulls expire, and are renewed, within the pin's TTL.
type pinned struct {
	jetstream.Consumer
	expiry jetstream.PullExpiry
}

// PullExpiry is how long the pull requests of a consumer pinned for ttl
// may wait. The server keeps a client pinned only while its pull requests
// come more often than the TTL: a quiet partition whose client waits on
// one request for longer loses its pin, and its messages wait for the
// client library to pull again with a new one.
func PullExpiry(ttl time.Duration) jetstream.PullExpiry {
	return jetstream.PullExpiry(max(time.Second, ttl/2))
}

func (c pinned) Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return c.Consumer.Fetch(batch, append(opts, jetstream.FetchPriorityGroup(Group))...)
}

func (c pinned) FetchBytes(maxBytes int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	return c.Consumer.FetchBytes(maxBytes, append(opts, jetstream.FetchPriorityGroup(Group))...)
}

// FetchNoWait takes no options upstream, so it is a short fetch here.
func (c pinned) FetchNoWait(batch int) (jetstream.MessageBatch, error) {
	return c.Fetch(batch, jetstream.FetchMaxWait(10*time.Millisecond))
}

func (c pinned) Consume(h jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return c.Consumer.Consume(h, append(opts, jetstream.PullPriorityGroup(Group), c.expiry)...)
}

func (c pinned) Messages(opts ...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	return c.Consumer.Messages(append(opts, jetstream.PullPriorityGroup(Group), c.expiry)...)
}

func (c pinned) Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error) {
	return c.Consumer.Next(append(opts, jetstream.FetchPriorityGroup(Group))...)
}

var _ jetstream.Consumer = pinned{}

// memberKey is the bucket key of one member of one durable. Keys allow
// [-/_=.a-zA-Z0-9]; anything else is escaped.
func memberKey(durable, member string) string { return escape(durable) + "." + escape(member) }

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '=' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

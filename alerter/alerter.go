package alerter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

// Deps are what the alerter uses but does not own.
type Deps struct {
	Log *slog.Logger
	Reg prometheus.Registerer
	JS  jetstream.JetStream
	// Cluster names alerts whose labels carry no cluster, in their
	// weir.alerts subject.
	Cluster string
	// Replicas of the WEIR_ALERTS stream and the state bucket.
	Replicas int
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Alerter evaluates the rules on WEIR_ENRICHED and notifies Alertmanagers.
type Alerter struct {
	cfg      Config
	d        Deps
	log      *slog.Logger
	m        *metrics
	notifier *notifier
	store    atomic.Pointer[Store]
	rules    *RuleSet
	files    []string
	filesSum string
	reload   chan struct{}
	cons     jetstream.Consumer
	// pinMu guards the pin and caught-up state that handle sets and a
	// stand-down resets.
	pinMu sync.Mutex
	// caughtUp closes once the consumer has read what was pending when it
	// started, so that the first evaluations after a restart do not see
	// empty windows and resolve every alert. A stand-down replaces it.
	caughtUp chan struct{}
	// lastPin is the Nats-Pin-Id of the last message delivered; lostPin the
	// one this alerter was deposed from, whose messages still in its
	// buffer do not make it active again.
	lastPin, lostPin string
	deposed          chan string // a group found another alerter pinned: the pin it held
	pinErrLogged     atomic.Bool
	closed           atomic.Bool
	active           atomic.Bool // the server delivers to this alerter
	droppedSeen      int64       // of the current store, read by gcLoop only
	countMu          sync.Mutex
	counts           map[*Group][3]int
}

// New validates cfg and loads the rule files; it does no I/O on NATS.
func New(cfg Config, d Deps) (*Alerter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JS == nil {
		return nil, errors.New("alerter: no JetStream")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Reg == nil {
		d.Reg = prometheus.NewRegistry()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	d.Replicas = max(d.Replicas, 1)
	files, err := cfg.ruleFiles()
	if err != nil {
		return nil, err
	}
	rs, err := LoadRules(files, cfg.EvaluationInterval)
	if err != nil {
		return nil, err
	}
	a := &Alerter{
		cfg: cfg, d: d, log: d.Log, m: newMetrics(d.Reg), rules: rs, files: files, filesSum: filesSum(files),
		reload: make(chan struct{}, 1), caughtUp: make(chan struct{}), deposed: make(chan string, 1),
	}
	a.notifier = &notifier{ams: cfg.Alertmanagers, client: &http.Client{}, m: a.m}
	a.store.Store(a.newStore(rs))
	a.m.reloadOK.Set(1)
	return a, nil
}

func (a *Alerter) newStore(rs *RuleSet) *Store {
	st := newStore(rs.sels, a.cfg.EvaluationInterval.Milliseconds(), a.cfg.LookbackDelta.Milliseconds())
	st.maxSeries = a.cfg.MaxSeries
	return st
}

// Reload asks Run to read the rule files again (SIGHUP). It never blocks.
func (a *Alerter) Reload() {
	select {
	case a.reload <- struct{}{}:
	default:
	}
}

// Run consumes, evaluates and notifies until ctx ends.
func (a *Alerter) Run(ctx context.Context) error {
	if a.closed.Load() {
		return errors.New("alerter: closed")
	}
	if err := proto.EnsureStream(ctx, a.d.JS, AlertsStream(a.d.Replicas)); err != nil {
		return err
	}
	kv, err := a.d.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: a.cfg.StateBucket, Description: "State of the alerter's alerts", History: 1, Replicas: a.d.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create key-value bucket %s: %w", a.cfg.StateBucket, err)
	}
	a.log.Info("alerter started", "groups", len(a.rules.Groups), "selections", len(a.rules.sels))
	cons, err := a.consumer(ctx)
	if err != nil {
		return err
	}
	a.cons = cons
	var wg sync.WaitGroup
	wg.Go(func() { a.consume(ctx, cons) })
	err = a.runGroups(ctx, kv)
	wg.Wait()
	a.unpin()
	return err
}

// unpin hands the consumer to a standby alerter at once, instead of after
// pinned_ttl, when this one was the active one and stops cleanly.
func (a *Alerter) unpin() {
	if !a.active.Load() {
		return // a standby must not unpin the active alerter
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if elsewhere, _ := a.pinnedElsewhere(ctx); elsewhere {
		return // deposed, and not stood down yet
	}
	s, err := a.d.JS.Stream(ctx, proto.StreamEnriched)
	if err == nil {
		err = s.UnpinConsumer(ctx, a.cfg.Durable, pinGroup)
	}
	if err != nil {
		a.log.Warn("unpinning the consumer failed; a standby takes over after pinned_ttl", "err", err)
	}
}

// pinGroup is the priority group of the alerter's consumer: the server
// delivers to one alerter of a durable at a time.
const pinGroup = "alerter"

// Close releases nothing Run does not already end; it is idempotent.
func (a *Alerter) Close() error {
	a.closed.Store(true)
	return nil
}

// consumer returns the durable consumer on WEIR_ENRICHED. A new one starts
// the widest window back, so the windows are full from the first
// evaluation; an existing one resumes where it was acknowledged.
func (a *Alerter) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := a.d.JS.Consumer(ctx, proto.StreamEnriched, a.cfg.Durable)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer %s on %s: %w", a.cfg.Durable, proto.StreamEnriched, err)
	}
	var widest int64
	for _, s := range a.rules.sels {
		widest = max(widest, s.window)
	}
	cc := proto.ConsumerConfig(a.cfg.Durable, proto.StreamFilter(proto.StageEnriched), a.cfg.AckWait, 1000)
	cc.PriorityPolicy = jetstream.PriorityPolicyPinned
	cc.PriorityGroups = []string{pinGroup}
	cc.PinnedTTL = a.cfg.PinnedTTL
	cc.DeliverPolicy = jetstream.DeliverByStartTimePolicy
	start := a.d.Now().Add(-time.Duration(widest)*time.Millisecond - a.cfg.LookbackDelta)
	cc.OptStartTime = &start
	cons, err = a.d.JS.CreateConsumer(ctx, proto.StreamEnriched, cc)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Another alerter of the durable created it first: share it.
		cons, err = a.d.JS.Consumer(ctx, proto.StreamEnriched, a.cfg.Durable)
	}
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on %s: %w", a.cfg.Durable, proto.StreamEnriched, err)
	}
	return cons, nil
}

// consume is the work of the one active alerter: every message of every
// partition into the store, acknowledged once ingested.
func (a *Alerter) consume(ctx context.Context, cons jetstream.Consumer) {
	var bufs decodeBuffers
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullPriorityGroup(pinGroup), partition.PullExpiry(a.cfg.PinnedTTL))
		if err != nil {
			a.log.Error("consume failed, retrying", "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		for {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					continue
				}
				break
			}
			a.handle(ctx, m, &bufs)
		}
		it.Stop()
	}
}

func (a *Alerter) handle(ctx context.Context, m jetstream.Msg, bufs *decodeBuffers) {
	pin := m.Headers().Get(pinIDHeader)
	a.pinMu.Lock()
	current := pin == "" || pin != a.lostPin
	if current {
		a.lastPin = pin
		a.active.Store(true)
	}
	a.pinMu.Unlock()
	if !current {
		// Delivered under the pin this alerter lost, and still in its
		// buffer: the server gives it to the pinned alerter again.
		_ = m.Nak()
		return
	}
	subj, err := proto.ParseSubject(m.Subject())
	var meta proto.Meta
	if err == nil {
		meta, err = proto.ParseMeta(m.Headers())
	}
	kept := 0
	st := a.store.Load()
	if err == nil {
		t := Target{Cluster: subj.Cluster, Node: subj.Node, Source: subj.Source, Chunk: meta.Chunk}
		if kept, err = st.ingestPayload(t, meta.Encoding, m.Data(), bufs); err != nil {
			err = fmt.Errorf("decode %s: %w", m.Subject(), err)
		}
	}
	if err != nil {
		a.deadLetter(ctx, m, err)
		return
	}
	a.m.messages.WithLabelValues("ok").Inc()
	a.m.samplesIngested.Add(float64(meta.Samples))
	a.m.samplesKept.Add(float64(kept))
	_ = m.Ack()
	// Caught up: nothing left, or what is left is newer than one
	// evaluation interval (a busy stream never shows zero pending).
	if md, err := m.Metadata(); err == nil && (md.NumPending == 0 || a.d.Now().Sub(md.Timestamp) < a.cfg.EvaluationInterval) {
		a.pinMu.Lock()
		if pin == "" || pin != a.lostPin { // not deposed meanwhile
			select {
			case <-a.caughtUp:
			default:
				close(a.caughtUp)
			}
		}
		a.pinMu.Unlock()
	}
}

// pinIDHeader names the pin id the server gives every message it delivers
// to the pinned client.
const pinIDHeader = "Nats-Pin-Id"

// pinnedElsewhere reports whether the server pinned another alerter: the
// priority group's pinned client is not the one this alerter last received
// from. The Messages iterator never reports it; it only pulls again without
// a pin and gets nothing. No message for a while is no such sign: the
// stream may be quiet. When the pin cannot be read, or nobody holds it, the
// alerter goes on. mine is the pin this alerter held when it compared.
func (a *Alerter) pinnedElsewhere(ctx context.Context) (elsewhere bool, mine string) {
	info, err := a.cons.Info(ctx)
	if err != nil {
		if ctx.Err() == nil && !a.pinErrLogged.Swap(true) {
			a.log.Warn("reading the consumer's pinned alerter failed; evaluating on", "err", err)
		}
		return false, ""
	}
	a.pinErrLogged.Store(false)
	for _, pg := range info.PriorityGroups {
		if pg.Group != pinGroup || pg.PinnedClientID == "" {
			continue
		}
		// Read after the answer: a message under a new pin of this
		// alerter's that arrived meanwhile counts.
		a.pinMu.Lock()
		mine = a.lastPin
		a.pinMu.Unlock()
		return pg.PinnedClientID != mine, mine
	}
	return false, ""
}

// standDown makes this alerter a standby again once its groups stopped,
// having lost the pin lost: it forgets its alerts (the bucket has them, and
// the active alerter updates them) and waits to catch up again, as a
// standby does, should the server pin it again. It reports false, and
// changes nothing, when a message under a newer pin of its own came
// meanwhile: the server pinned this alerter again under a new id.
func (a *Alerter) standDown(lost string) bool {
	a.pinMu.Lock()
	if a.lastPin != lost {
		a.pinMu.Unlock()
		return false
	}
	a.lostPin = lost
	a.active.Store(false)
	a.caughtUp = make(chan struct{})
	a.pinMu.Unlock()
	for _, g := range a.rules.Groups {
		for _, r := range g.Rules {
			r.active = map[uint64]*Alert{}
		}
	}
	a.countMu.Lock()
	a.counts = nil
	a.countMu.Unlock()
	for _, s := range []AlertState{StatePending, StateFiring, StateInactive} {
		a.m.alerts.WithLabelValues(s.String()).Set(0)
	}
	a.log.Info("standby: another alerter holds the pin")
	return true
}

// deadLetter moves a message the alerter cannot read to weir.dead.alerter
// with the reason; it is acked once stored, or left for redelivery.
func (a *Alerter) deadLetter(ctx context.Context, m jetstream.Msg, cause error) {
	out := proto.DeadLetter("alerter", "alerter", m, cause)
	if _, err := a.d.JS.PublishMsg(ctx, out); err != nil {
		a.log.Error("dead-letter publish failed; message left for redelivery", "subject", m.Subject(), "err", err)
		_ = m.Nak()
		return
	}
	a.m.messages.WithLabelValues("dead").Inc()
	a.log.Warn("message dead-lettered", "subject", m.Subject(), "err", cause)
	_ = m.Ack()
}

// runGroups evaluates every group at its interval until ctx ends. It starts
// once this alerter has read the stream up to date: a standby alerter,
// which the server delivers nothing to, waits here until the active one is
// gone, and only then reads the alert state the active one left. An active
// alerter the server pins another one in place of stands by again.
func (a *Alerter) runGroups(ctx context.Context, kv jetstream.KeyValue) error {
	for {
		a.pinMu.Lock()
		caughtUp := a.caughtUp
		a.pinMu.Unlock()
		select {
		case <-caughtUp:
		case <-ctx.Done():
			return nil
		}
		n, err := loadState(ctx, kv, a.rules, a.d.Now().Add(a.cfg.Warmup))
		if err != nil {
			return err
		}
		a.log.Info("active: evaluating rules", "alerts_restored", n)
		for {
			lost, deposed := a.evaluate(ctx, kv)
			if !deposed {
				return nil
			}
			if a.standDown(lost) {
				break
			}
		}
	}
}

// evaluate runs the groups until ctx ends, or until a group finds another
// alerter pinned in place of the pin lost (deposed); a reload stops the
// groups, swaps the rules and starts them again.
func (a *Alerter) evaluate(ctx context.Context, kv jetstream.KeyValue) (lost string, deposed bool) {
	check := time.NewTicker(a.cfg.ReloadCheckInterval)
	defer check.Stop()
	select {
	case <-a.deposed: // found by a group the last evaluate stopped
	default:
	}
	for {
		gctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, g := range a.rules.Groups {
			wg.Go(func() { a.runGroup(gctx, g, kv) })
		}
		wg.Go(func() { a.gcLoop(gctx) })
		reload := false
		for !reload {
			select {
			case <-ctx.Done():
				cancel()
				wg.Wait()
				return "", false
			case lost := <-a.deposed:
				cancel()
				wg.Wait()
				return lost, true
			case <-a.reload:
				reload = true
			case <-check.C:
				reload = filesSum(a.files) != a.filesSum || a.globsChanged()
			}
		}
		cancel()
		wg.Wait()
		a.applyReload(ctx, kv)
	}
}

func (a *Alerter) globsChanged() bool {
	files, err := a.cfg.ruleFiles()
	return err != nil || !slices.Equal(files, a.files)
}

// applyReload loads the rule files again. A file that fails keeps the old
// rules running; the failure is logged and shown by a metric.
func (a *Alerter) applyReload(ctx context.Context, kv jetstream.KeyValue) {
	files, err := a.cfg.ruleFiles()
	var rs *RuleSet
	if err == nil {
		rs, err = LoadRules(files, a.cfg.EvaluationInterval)
	}
	sum := filesSum(files)
	if err != nil {
		a.m.reloadOK.Set(0)
		a.m.reloads.WithLabelValues("failure").Inc()
		a.log.Error("rule reload failed; the previous rules keep running", "err", err)
		a.files, a.filesSum = files, sum // report a bad file once, not at every check
		return
	}
	// Alerts carry over to the rule with the same key: group, name, and
	// which rule of that name it is.
	old := map[string]*Rule{}
	for _, g := range a.rules.Groups {
		for _, r := range g.Rules {
			old[r.key] = r
		}
	}
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			if o, ok := old[r.key]; ok {
				r.active = o.active
			}
			delete(old, r.key)
		}
	}
	for _, r := range old {
		for _, al := range r.active {
			_ = kv.Delete(ctx, alertKey(r, al))
		}
		a.m.ruleHealth.DeleteLabelValues(r.groupName(a.rules), r.Name)
	}
	st := a.newStore(rs)
	st.migrate(a.store.Load())
	a.store.Store(st)
	a.rules, a.files, a.filesSum = rs, files, sum
	a.m.reloadOK.Set(1)
	a.m.reloads.WithLabelValues("success").Inc()
	a.log.Info("rules reloaded", "groups", len(rs.Groups), "selections", len(rs.sels))
}

func (r *Rule) groupName(rs *RuleSet) string {
	for _, g := range rs.Groups {
		if slices.Contains(g.Rules, r) {
			return g.Name
		}
	}
	return ""
}

func (a *Alerter) runGroup(ctx context.Context, g *Group, kv jetstream.KeyValue) {
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	for {
		a.evalGroup(ctx, g, kv)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// evalGroup evaluates g, publishes its state changes, notifies and stores
// the state. The state is stored last: a crash in between sends again,
// never less.
func (a *Alerter) evalGroup(ctx context.Context, g *Group, kv jetstream.KeyValue) {
	// A deposed alerter gets no more data: its windows would empty and
	// resolve what the active alerter has firing.
	if elsewhere, mine := a.pinnedElsewhere(ctx); elsewhere {
		select {
		case a.deposed <- mine:
		default:
		}
		return
	}
	start := a.d.Now()
	// Each error is also its rule's Health, reported below.
	changes, _ := g.Eval(a.store.Load(), start)
	a.m.evalDuration.WithLabelValues(g.Name).Observe(time.Since(start).Seconds())
	for _, r := range g.Rules {
		err := r.Health()
		if err == nil {
			a.m.ruleHealth.WithLabelValues(g.Name, r.Name).Set(1)
			if r.loggedErr != "" {
				a.log.Info("rule healthy again", "group", g.Name, "rule", r.Name)
				r.loggedErr = ""
			}
			continue
		}
		a.m.ruleHealth.WithLabelValues(g.Name, r.Name).Set(0)
		a.m.evalFailures.WithLabelValues(g.Name).Inc()
		// Logged when it starts failing or fails differently, not at
		// every evaluation: the metric counts each one.
		if msg := err.Error(); msg != r.loggedErr {
			a.log.Error("rule evaluation failed; the rule is unhealthy", "group", g.Name, "rule", r.Name,
				"file", fmt.Sprintf("%s:%d", r.File, r.Line), "err", err)
			r.loggedErr = msg
		}
	}
	var removed []Transition
	for _, tr := range changes {
		if tr.Removed {
			removed = append(removed, tr)
		}
		m, err := eventMsg(g, tr, a.d.Cluster)
		if err == nil {
			_, err = a.d.JS.PublishMsg(ctx, m)
		}
		if err != nil {
			a.m.stateErrors.Inc()
			a.log.Error("publishing alert state change failed", "alertname", tr.Rule.Name, "err", err)
			continue
		}
		a.m.transitions.WithLabelValues(eventState(tr)).Inc()
		a.log.Info("alert state changed", "alertname", tr.Rule.Name, "from", tr.From, "to", eventState(tr), "labels", tr.Alert.Labels.String())
	}
	for _, err := range a.notifier.send(ctx, toSend(g, start, a.cfg.ResendDelay)) {
		a.log.Error("notifying alertmanager failed", "err", err)
	}
	if err := saveState(ctx, kv, g, removed); err != nil {
		a.m.stateErrors.Inc()
		a.log.Error("saving alert state failed", "group", g.Name, "err", err)
	}
	a.countAlerts(g)
}

func eventState(tr Transition) string {
	if tr.To == StateInactive && tr.From == StateFiring {
		return "resolved"
	}
	return tr.To.String()
}

// countAlerts sets the alerts gauge from every group's own counts: each
// group goroutine owns its rules' alerts, so it counts only those.
func (a *Alerter) countAlerts(g *Group) {
	var counts [3]int
	for _, r := range g.Rules {
		for _, al := range r.active {
			counts[al.State]++
		}
	}
	a.countMu.Lock()
	defer a.countMu.Unlock()
	if a.counts == nil {
		a.counts = map[*Group][3]int{}
	}
	a.counts[g] = counts
	var total [3]int
	for gg, c := range a.counts {
		if !slices.Contains(a.rules.Groups, gg) {
			delete(a.counts, gg)
			continue
		}
		for i := range c {
			total[i] += c[i]
		}
	}
	for _, s := range []AlertState{StatePending, StateFiring, StateInactive} {
		a.m.alerts.WithLabelValues(s.String()).Set(float64(total[s]))
	}
}

func (a *Alerter) gcLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		st := a.store.Load()
		st.gc(a.d.Now().UnixMilli())
		series, samples := st.selected()
		a.m.seriesSelected.Set(float64(series))
		a.m.samplesHeld.Set(float64(samples))
		if d := st.droppedSeries(); d > a.droppedSeen {
			a.m.seriesDropped.Add(float64(d - a.droppedSeen))
			a.log.Warn("series not kept: alerter.max_series reached", "max_series", a.cfg.MaxSeries, "dropped", d-a.droppedSeen)
		}
		a.droppedSeen = st.droppedSeries()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// filesSum identifies the content of files, to notice a change.
func filesSum(files []string) string {
	var b strings.Builder
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(&b, "%s:missing;", f)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

package sink

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// keepAlive tells the server every held message is still in progress, a
// third of AckWait at a time, so that a message waiting in a shard queue or
// on a retrying backend is not redelivered to another consumer.
func (s *Sink) keepAlive(ctx context.Context, held *heldSet) {
	every := s.cfg.AckWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			held.touch(now, every)
		}
	}
}

// nakHeld returns every unfinished message of part to the server in
// stream order: the server redelivers nacked messages first and in the
// order it got the naks, so the next consumer sends each target's scrapes
// in order. The server applies acks and naks asynchronously, in order; the
// last nak is a request it answers once applied, so when nakHeld returns
// every message is queued for redelivery, before the partition's next
// owner can pull anything newer.
func (s *Sink) nakHeld(part *share) {
	msgs := part.held.takeAll()
	if len(msgs) == 0 {
		return
	}
	failed := 0
	for _, m := range msgs[:len(msgs)-1] {
		if err := m.Nak(); err != nil {
			failed++
		}
	}
	last := msgs[len(msgs)-1]
	confirmed := false
	if nc := s.js.Conn(); nc != nil && last.Reply() != "" {
		_, err := nc.Request(last.Reply(), []byte("-NAK"), drainWait)
		confirmed = err == nil
	}
	if !confirmed {
		if err := last.Nak(); err != nil {
			failed++
		}
	}
	s.log.Info("returned unfinished messages for redelivery", "partition", part.id,
		"messages", len(msgs), "failed", failed, "confirmed", confirmed)
}

// heldSet is every message received and not yet acked or nacked, by stream
// sequence: what the keepalive touches and what a stopping sink nacks. It
// also remembers the last settled sequences, to recognise a late copy.
type heldSet struct {
	mu      sync.Mutex
	msgs    map[uint64]heldMsg
	settled map[uint64]struct{}
	recent  []uint64 // ring of the sequences in settled, oldest at next
	next    int
	gauge   prometheus.Gauge
}

type heldMsg struct {
	msg    jetstream.Msg
	since  time.Time // when the sink received it
	stored time.Time // when the stream stored it
}

// newHeldSet remembers up to remember settled sequences. The server hands
// out at most max_ack_pending messages at a time, so a copy of a settled
// message can only come from about that many deliveries back. The gauge
// is shared by the held sets of every partition, so it only moves by
// differences.
func newHeldSet(gauge prometheus.Gauge, remember int) *heldSet {
	return &heldSet{
		msgs:    map[uint64]heldMsg{},
		settled: make(map[uint64]struct{}, remember),
		recent:  make([]uint64, 0, remember),
		gauge:   gauge,
	}
}

type addResult int

const (
	added addResult = iota
	alreadyHeld
	alreadySettled
)

func (h *heldSet) add(seq uint64, m jetstream.Msg, now, stored time.Time) addResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.msgs[seq]; ok {
		return alreadyHeld
	}
	if _, ok := h.settled[seq]; ok {
		return alreadySettled
	}
	h.msgs[seq] = heldMsg{msg: m, since: now, stored: stored}
	h.gauge.Inc()
	return added
}

// settle forgets a message that was acked, and remembers its sequence.
func (h *heldSet) settle(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.msgs[seq]; ok {
		delete(h.msgs, seq)
		h.gauge.Dec()
	}
	if len(h.recent) < cap(h.recent) {
		h.recent = append(h.recent, seq)
	} else {
		delete(h.settled, h.recent[h.next])
		h.recent[h.next] = seq
		h.next = (h.next + 1) % len(h.recent)
	}
	h.settled[seq] = struct{}{}
}

// touch calls InProgress on the messages held for at least age. It calls
// outside the lock, so shards are not held up by the publishes.
func (h *heldSet) touch(now time.Time, age time.Duration) {
	var due []jetstream.Msg
	h.mu.Lock()
	for _, hm := range h.msgs {
		if now.Sub(hm.since) >= age {
			due = append(due, hm.msg)
		}
	}
	h.mu.Unlock()
	for _, m := range due {
		// ErrMsgAlreadyAckd when a shard finished it meanwhile: nothing to do.
		_ = m.InProgress()
	}
}

// takeAll empties the set and returns its messages in stream order.
func (h *heldSet) takeAll() []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	seqs := slices.Sorted(maps.Keys(h.msgs))
	out := make([]jetstream.Msg, 0, len(seqs))
	for _, seq := range seqs {
		out = append(out, h.msgs[seq].msg)
	}
	h.gauge.Sub(float64(len(h.msgs)))
	clear(h.msgs)
	return out
}

// oldest is when the stream stored the oldest message held, or zero.
func (h *heldSet) oldest() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	var o time.Time
	for _, hm := range h.msgs {
		if o.IsZero() || hm.stored.Before(o) {
			o = hm.stored
		}
	}
	return o
}

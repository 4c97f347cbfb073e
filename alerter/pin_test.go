package alerter

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The order of events these tests need, a consumer info read before the
// message it describes is handled, is a window of milliseconds with a real
// server: the consumer, its messages and JetStream are stand-ins here.

type pinnedConsumer struct {
	jetstream.Consumer
	pinned string
}

func (c *pinnedConsumer) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	return &jetstream.ConsumerInfo{PriorityGroups: []jetstream.PriorityGroupState{{Group: pinGroup, PinnedClientID: c.pinned}}}, nil
}

type acceptingJS struct{ jetstream.JetStream }

func (acceptingJS) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{}, nil
}

// pinnedMsg is a message delivered under a pin; its subject is not Weir's,
// so handle dead-letters it, after it has read the pin.
type pinnedMsg struct {
	jetstream.Msg
	h      nats.Header
	nacked *bool
}

func (m pinnedMsg) Headers() nats.Header { return m.h }
func (m pinnedMsg) Subject() string      { return "not-a-weir-subject" }
func (m pinnedMsg) Data() []byte         { return nil }
func (m pinnedMsg) Ack() error           { return nil }
func (m pinnedMsg) Nak() error           { *m.nacked = true; return nil }

func newPinTestAlerter(t *testing.T) *Alerter {
	t.Helper()
	cfg := testConfig(t, "groups:\n  - name: g\n    interval: 100ms\n    rules:\n      - alert: Hot\n        expr: series(\"temperature\") > 50\n", nil)
	a, err := New(cfg, Deps{Log: testLogger(t), Reg: prometheus.NewRegistry(), JS: acceptingJS{}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// deliver hands a message under pin to a and reports whether a nacked it.
func deliver(a *Alerter, pin string) (nacked bool) {
	h := nats.Header{}
	h.Set(pinIDHeader, pin)
	var bufs decodeBuffers
	a.handle(context.Background(), pinnedMsg{h: h, nacked: &nacked}, &bufs)
	return nacked
}

// TestRepinnedAlerterEvaluatesOn: the server pins this alerter again under
// a new id, and a group reads that id before its first message is handled.
// The group takes it for another alerter's; by the time the groups have
// stopped the message has come, and the alerter must evaluate on, not
// record its own new pin as lost and ignore every message after it.
func TestRepinnedAlerterEvaluatesOn(t *testing.T) {
	a := newPinTestAlerter(t)
	deliver(a, "P1")
	a.cons = &pinnedConsumer{pinned: "P3"}
	a.evalGroup(t.Context(), a.rules.Groups[0], nil)
	var lost string
	select {
	case lost = <-a.deposed:
	default:
		t.Fatal("a pin other than the last one received did not stop the group")
	}
	deliver(a, "P3") // while the groups stop
	if a.standDown(lost) {
		t.Fatal("stood down though the server pinned this alerter again")
	}
	if nacked := deliver(a, "P3"); nacked || !a.active.Load() {
		t.Errorf("a message under its own new pin: nacked %v, active %v; want taken, active", nacked, a.active.Load())
	}
}

// TestDeposedAlerterHandsBackItsBuffer: messages an alerter still holds
// under the pin it lost go back to the server, for the alerter pinned now.
func TestDeposedAlerterHandsBackItsBuffer(t *testing.T) {
	a := newPinTestAlerter(t)
	deliver(a, "P1")
	a.cons = &pinnedConsumer{pinned: "P2"}
	a.evalGroup(t.Context(), a.rules.Groups[0], nil)
	select {
	case lost := <-a.deposed:
		if !a.standDown(lost) {
			t.Fatal("did not stand down with another alerter pinned")
		}
	default:
		t.Fatal("another alerter pinned did not stop the group")
	}
	if nacked := deliver(a, "P1"); !nacked || a.active.Load() {
		t.Errorf("a message under the lost pin: nacked %v, active %v; want nacked, standing by", nacked, a.active.Load())
	}
}

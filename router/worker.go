package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// worker routes one partition's messages, one at a time.
type worker struct {
	r     *Router
	log   *slog.Logger
	batch proto.Batch // reused by every message
	// reader counts the series of a message that every route keeps as
	// it is, without decoding its labels.
	reader proto.BlockReader
	rt     *router
	// lastSeq is the stream sequence of the last message this worker
	// settled. A message at or below it is a redelivery of one already
	// handled: the server redelivers what sat in the client library's
	// buffer longer than AckWait while a publish was being retried.
	// Routing it again would put old samples after newer ones.
	lastSeq uint64
}

func (r *Router) newWorker(partition int) *worker {
	return &worker{r: r, log: r.log.With("partition", partition), rt: newRouter(r.routes)}
}

// output is one message for one route's stream.
type output struct {
	route *route
	msg   *nats.Msg
}

// handle routes m, publishes every route's share and acks m once all were
// stored. It reports false when ctx ended first; m is then not settled.
func (w *worker) handle(ctx context.Context, m jetstream.Msg) bool {
	start := time.Now()
	r := w.r
	r.metrics.received.Inc()
	md, err := m.Metadata()
	if err != nil {
		w.log.Error("message without JetStream metadata, ignored", "subject", m.Subject(), "err", err)
		return true
	}
	seq := md.Sequence.Stream
	if seq <= w.lastSeq {
		w.log.Debug("redelivery of a message already routed", "subject", m.Subject(), "seq", seq, "deliveries", md.NumDelivered)
		_ = m.Ack()
		return true
	}
	subj, meta, err := w.decode(m)
	if err != nil {
		if !w.deadLetter(ctx, m, err) {
			return false
		}
		w.lastSeq = seq
		return true
	}
	for i, rt := range r.routes {
		rt.metrics.add(&w.rt.counts[i])
	}
	if len(w.rt.exprErrors) > 0 {
		if ok, suppressed := r.exprLog.allow(start); ok {
			w.log.Warn("expr failed on series; they were dropped", "subject", m.Subject(), "err", errors.Join(w.rt.exprErrors...), "suppressed", suppressed)
		}
	}
	outs, err := w.outputs(subj, meta, m.Headers(), m.Data())
	if err != nil {
		// A series that does not fit in a message after relabeling: the
		// input is fine, the route's configuration makes it too large.
		if !w.deadLetter(ctx, m, err) {
			return false
		}
		w.lastSeq = seq
		return true
	}
	if !w.publish(ctx, m, outs) {
		return false
	}
	if err := m.Ack(); err != nil {
		// NATS is away: the server redelivers the message after AckWait,
		// and the route streams drop the copies by their message ids.
		w.log.Warn("ack failed", "subject", m.Subject(), "err", err)
	} else {
		r.metrics.acked.Inc()
	}
	w.lastSeq = seq
	r.metrics.duration.Observe(time.Since(start).Seconds())
	return true
}

// decode checks the subject and headers of m, decodes its payload into the
// worker's batch and routes it.
func (w *worker) decode(m jetstream.Msg) (proto.Subject, proto.Meta, error) {
	subj, err := proto.ParseSubject(m.Subject())
	if err != nil {
		return subj, proto.Meta{}, err
	}
	if subj.Stage != proto.StageEnriched {
		return subj, proto.Meta{}, fmt.Errorf("%w: %q: the router reads stage %q, not %q", proto.ErrBadSubject, m.Subject(), proto.StageEnriched, subj.Stage)
	}
	meta, err := proto.ParseMeta(m.Headers())
	if err != nil {
		return subj, meta, err
	}
	enc, err := proto.EncodingByName(meta.Encoding)
	if err != nil {
		return subj, meta, err
	}
	if w.r.keepsEverything && meta.Encoding == proto.DefaultEncoding.Name() {
		// Every route takes the payload as it is. Its first frame and
		// headers count it without decompressing anything, and the sinks
		// check the rest; one without that frame is read here, and fails.
		if series, ok := proto.BlockSeries(m.Data()); ok {
			w.rt.keepAll(series, meta.Samples)
			return subj, meta, nil
		}
		if err := w.reader.Reset(m.Data()); err != nil {
			return subj, meta, fmt.Errorf("decode %s: %w", m.Subject(), err)
		}
		w.rt.keepAll(w.reader.Len(), w.reader.Samples())
		return subj, meta, nil
	}
	if err := enc.Decode(m.Data(), &w.batch); err != nil {
		return subj, meta, fmt.Errorf("decode %s: %w", m.Subject(), err)
	}
	w.rt.route(subj, &w.batch)
	return subj, meta, nil
}

// outputs encodes what every route kept into messages for its stream.
// They keep the input's headers, so its message id: each route has its
// own stream, so ids cannot collide across routes, and a replay is
// dropped as a duplicate. A route's share that no longer fits in one
// message (relabeling added labels) is split, and the later parts get the
// id with "+<part>" appended. A route that kept the batch as it came
// publishes the input payload without encoding it again.
func (w *worker) outputs(subj proto.Subject, meta proto.Meta, in nats.Header, data []byte) ([]output, error) {
	var outs []output
	for i, rt := range w.r.routes {
		if w.rt.counts[i].seriesKept == 0 {
			continue
		}
		h := proto.DataHeaders(in)
		h.Set(proto.HeaderEncoding, proto.DefaultEncoding.Name())
		h.Set(proto.HeaderSamples, strconv.Itoa(w.rt.counts[i].samplesKept))
		var chunks []proto.Chunk
		if c := &w.rt.counts[i]; c.unchanged() && meta.Encoding == proto.DefaultEncoding.Name() {
			chunks = []proto.Chunk{{Payload: data, Samples: c.samplesKept}}
		} else {
			room := w.r.maxPayload - headerBytes(h) - len("+999999")
			var err error
			if chunks, err = proto.EncodeChunks(proto.DefaultEncoding, w.rt.out[i], room); err != nil {
				return nil, fmt.Errorf("route %s: %w", rt.name, err)
			}
		}
		out := proto.Subject{Stage: proto.StageRoute, Route: rt.name, Cluster: subj.Cluster, Node: subj.Node, Source: subj.Source}.String()
		for k, c := range chunks {
			msg := nats.NewMsg(out)
			msg.Data = c.Payload
			msg.Header = h
			if len(chunks) > 1 {
				msg.Header = cloneHeader(h)
				msg.Header.Set(proto.HeaderSamples, strconv.Itoa(c.Samples))
				if k > 0 && meta.MsgID != "" {
					msg.Header.Set(proto.HeaderMsgID, meta.MsgID+"+"+strconv.Itoa(k))
				}
			}
			outs = append(outs, output{route: rt, msg: msg})
		}
	}
	return outs, nil
}

func cloneHeader(h nats.Header) nats.Header {
	out := make(nats.Header, len(h))
	for k, vs := range h {
		out[k] = slices.Clone(vs)
	}
	return out
}

// headerBytes is what h takes on the wire, which counts against max_payload.
func headerBytes(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// publish publishes outs and waits for JetStream to store every one. What
// fails or times out is published again, with backoff, until it is stored
// or ctx ends; meanwhile the input m is kept in progress, so it is not
// redelivered. It reports false when ctx ended first.
func (w *worker) publish(ctx context.Context, m jetstream.Msg, outs []output) bool {
	wait := minBackoff
	for len(outs) > 0 {
		failed, err := w.publishOnce(ctx, outs)
		if ctx.Err() != nil {
			return false
		}
		if len(failed) == 0 {
			return true
		}
		for _, o := range failed {
			o.route.metrics.publishFailures.Inc()
		}
		if ok, suppressed := w.r.publishLog.allow(time.Now()); ok {
			w.log.Error("publish to route stream failed, retrying", "subject", m.Subject(), "route", failed[0].route.name,
				"failed", len(failed), "of", len(outs), "err", err, "wait", wait, "suppressed", suppressed)
		}
		_ = m.InProgress()
		if !sleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, maxBackoff)
		outs = failed
	}
	return true
}

// publishOnce publishes outs asynchronously and returns those JetStream did
// not store within the publish timeout, with the first error.
func (w *worker) publishOnce(ctx context.Context, outs []output) ([]output, error) {
	futures := make([]jetstream.PubAckFuture, len(outs))
	var failed []output
	var first error
	fail := func(o output, err error) {
		failed = append(failed, o)
		if first == nil {
			first = fmt.Errorf("%s: %w", o.msg.Subject, err)
		}
	}
	for i, o := range outs {
		f, err := w.r.js.PublishMsgAsync(o.msg, jetstream.WithExpectStream(o.route.stream))
		if err != nil {
			fail(o, err)
			continue
		}
		futures[i] = f
	}
	wctx, cancel := context.WithTimeout(ctx, w.r.cfg.PublishTimeout)
	defer cancel()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			outs[i].route.metrics.published.Inc()
		case err := <-f.Err():
			fail(outs[i], err)
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fail(outs[i], fmt.Errorf("no acknowledgement within %s", w.r.cfg.PublishTimeout))
		}
	}
	return failed, first
}

// deadLetter publishes m to weir.dead.router with the reason, and acks m
// once JetStream stored the letter. It retries the publish until it
// succeeds or ctx ends, and reports whether m was settled.
func (w *worker) deadLetter(ctx context.Context, m jetstream.Msg, cause error) bool {
	out := proto.DeadLetter("router", "router", m, cause)
	wait := minBackoff
	for {
		_, err := w.r.js.PublishMsg(ctx, out)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, nats.ErrMaxPayload) && out.Data != nil {
			proto.OmitPayload(out)
			continue
		}
		w.log.Error("dead-letter publish failed, retrying", "subject", m.Subject(), "err", err, "wait", wait)
		_ = m.InProgress()
		if !sleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, maxBackoff)
	}
	w.r.metrics.dead.Inc()
	if ok, suppressed := w.r.deadLog.allow(time.Now()); ok {
		w.log.Warn("message dead-lettered", "subject", m.Subject(), "err", cause, "suppressed", suppressed)
	}
	if err := m.Ack(); err != nil {
		w.log.Warn("ack failed", "subject", m.Subject(), "err", err)
	} else {
		w.r.metrics.acked.Inc()
	}
	return true
}

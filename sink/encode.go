package sink

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/klauspost/compress/s2"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/weirmetrics/weir/proto"
)

// protocol is the remote-write version a request is encoded for.
type protocol int32

const (
	protoV1 protocol = iota
	protoV2
)

func (p protocol) String() string {
	if p == protoV2 {
		return "2.0"
	}
	return "1.0"
}

// Content types and version headers of the two protocols.
const (
	contentTypeV1 = "application/x-protobuf"
	contentTypeV2 = "application/x-protobuf;proto=" + MessageV2
	versionV1     = "0.1.0"
	versionV2     = "2.0.0"
)

// request is a slice of one decoded batch that fits max_samples_per_send,
// valid until the builder that made it builds the next.
type request struct {
	series []prompb.TimeSeries
	// labels, when set, holds the labels of the series instead of their
	// Labels field: series k has those of labels' series ids[k].
	labels  *seriesLabels
	ids     []int32
	samples int   // float samples and histograms, as Prometheus counts them
	newest  int64 // newest timestamp in the request, Unix ms
}

// encoder turns a request into a snappy-compressed body of either
// protocol. A shard owns one and reuses its buffers from one request to
// the next.
type encoder struct {
	raw, compressed []byte
	symbols         symbolTable
	v2              writev2.Request
	refs            []uint32
	samples         []writev2.Sample
	// slots is the ref+1 in the request of each symbol of
	// request.labels, 0 while the request has not used it.
	slots []uint32
}

func newEncoder() *encoder { return &encoder{symbols: symbolTable{refs: map[string]uint32{}}} }

// symbolTable is writev2.SymbolsTable with a reset that keeps the map's
// memory: that one deletes key by key, and the map then allocates again
// as it refills.
type symbolTable struct {
	refs    map[string]uint32
	strings []string
}

func (t *symbolTable) reset() {
	clear(t.refs)
	// The empty string is symbol 0, as the protocol requires.
	t.strings = append(t.strings[:0], "")
	t.refs[""] = 0
}

func (t *symbolTable) symbolize(s string) uint32 {
	if ref, ok := t.refs[s]; ok {
		return ref
	}
	ref := uint32(len(t.strings))
	t.strings = append(t.strings, s)
	t.refs[s] = ref
	return ref
}

// encode returns the compressed body of req, valid until the next call.
func (e *encoder) encode(req request, p protocol) ([]byte, error) {
	var err error
	switch {
	case p == protoV2:
		err = e.marshalV2(req)
	case req.labels != nil:
		e.marshalLabelledV1(req)
	default:
		err = e.marshalV1(req.series)
	}
	if err != nil {
		return nil, err
	}
	// s2 writes the snappy block format remote write asks for, faster and
	// smaller than golang/snappy (BENCHMARKS.md, "Wire encoding: block2+zstd").
	n := s2.MaxEncodedLen(len(e.raw))
	if n < 0 {
		return nil, fmt.Errorf("request of %d bytes: too large to compress", len(e.raw))
	}
	if cap(e.compressed) < n {
		e.compressed = make([]byte, n)
	}
	e.compressed = s2.EncodeSnappy(e.compressed[:cap(e.compressed)], e.raw)
	return e.compressed, nil
}

func (e *encoder) grow(size int) {
	if cap(e.raw) < size {
		e.raw = make([]byte, size)
	}
	e.raw = e.raw[:size]
}

func (e *encoder) marshalV1(series []prompb.TimeSeries) error {
	wr := prompb.WriteRequest{Timeseries: series}
	e.grow(wr.Size())
	if _, err := wr.MarshalToSizedBuffer(e.raw); err != nil {
		return fmt.Errorf("marshal write request 1.0: %w", err)
	}
	return nil
}

// marshalLabelledV1 is marshalV1 for a request with its labels apart: the
// same bytes, as gogo protobuf writes them, without a Size pass over the
// labels, whose sizes were counted once per target, and mostly with the
// labels marshalled once per target as well.
func (e *encoder) marshalLabelledV1(req request) {
	e.raw = e.raw[:0]
	for k := range req.series {
		id, samples := req.ids[k], req.series[k].Samples
		size := int(req.labels.sizes1[id])
		for _, s := range samples {
			size += 2 + sampleSize(s)
		}
		e.raw = append(e.raw, 0x0a) // WriteRequest.timeseries
		e.raw = binary.AppendUvarint(e.raw, uint64(size))
		if l := req.labels; l.marshalled1() {
			e.raw = append(e.raw, l.v1[l.v1Offs[id]:l.v1Offs[id+1]]...)
		} else { // the sink fell back to 1.0 since the labels were read
			e.raw = l.appendV1(e.raw, id)
		}
		for _, s := range samples {
			e.raw = append(e.raw, 0x12, byte(sampleSize(s))) // TimeSeries.samples
			if s.Value != 0 {
				e.raw = append(e.raw, 0x09) // Sample.value
				e.raw = binary.LittleEndian.AppendUint64(e.raw, math.Float64bits(s.Value))
			}
			if s.Timestamp != 0 {
				e.raw = append(e.raw, 0x10) // Sample.timestamp
				e.raw = binary.AppendUvarint(e.raw, uint64(s.Timestamp))
			}
		}
	}
}

// sampleSize is the size of a marshalled Sample, at most 20 bytes: its
// length takes one byte.
func sampleSize(s prompb.Sample) int {
	n := 0
	if s.Value != 0 {
		n += 9
	}
	if s.Timestamp != 0 {
		n += 1 + uvarintSize(uint64(s.Timestamp))
	}
	return n
}

// marshalV2 builds an io.prometheus.write.v2.Request: every label name and
// value goes once into the symbol table, series refer to it by index.
func (e *encoder) marshalV2(req request) error {
	series := req.series
	e.symbols.reset()
	if req.labels != nil {
		e.slots = append(e.slots[:0], make([]uint32, len(req.labels.seen.Symbols()))...)
	}
	clear(e.v2.Timeseries)
	e.v2.Timeseries = e.v2.Timeseries[:0]
	// One backing array for every ref and sample of the request, sized
	// first so that the series' subslices stay valid while it fills.
	nrefs, nsamples := 0, 0
	for i := range series {
		nrefs += 2 * len(series[i].Labels)
		if req.labels != nil {
			names, _ := req.labels.seen.Series(int(req.ids[i]))
			nrefs += 2 * len(names)
		}
		nsamples += len(series[i].Samples)
		for _, ex := range series[i].Exemplars {
			nrefs += 2 * len(ex.Labels)
		}
	}
	if cap(e.refs) < nrefs {
		e.refs = make([]uint32, 0, nrefs)
	}
	if cap(e.samples) < nsamples {
		e.samples = make([]writev2.Sample, 0, nsamples)
	}
	e.refs, e.samples = e.refs[:0], e.samples[:0]
	for i := range series {
		ts := &series[i]
		start := len(e.refs)
		if req.labels != nil {
			e.refs = e.symbolizeLabels(e.refs, req.labels, req.ids[i])
		} else {
			e.refs = e.symbolize(e.refs, ts.Labels)
		}
		out := writev2.TimeSeries{LabelsRefs: e.refs[start:len(e.refs):len(e.refs)]}
		first := len(e.samples)
		for _, s := range ts.Samples {
			e.samples = append(e.samples, writev2.Sample{Value: s.Value, Timestamp: s.Timestamp})
		}
		out.Samples = e.samples[first:len(e.samples):len(e.samples)]
		for _, h := range ts.Histograms {
			if h.IsFloatHistogram() {
				out.Histograms = append(out.Histograms, writev2.FromFloatHistogram(0, h.Timestamp, h.ToFloatHistogram()))
			} else {
				out.Histograms = append(out.Histograms, writev2.FromIntHistogram(0, h.Timestamp, h.ToIntHistogram()))
			}
		}
		for _, ex := range ts.Exemplars {
			start := len(e.refs)
			e.refs = e.symbolize(e.refs, ex.Labels)
			out.Exemplars = append(out.Exemplars, writev2.Exemplar{
				LabelsRefs: e.refs[start:len(e.refs):len(e.refs)], Value: ex.Value, Timestamp: ex.Timestamp,
			})
		}
		e.v2.Timeseries = append(e.v2.Timeseries, out)
	}
	e.v2.Symbols = e.symbols.strings
	e.grow(e.v2.Size())
	// The optimized marshaller writes label refs in place; the generated
	// one allocates a scratch buffer per series.
	if _, err := e.v2.OptimizedMarshalToSizedBuffer(e.raw); err != nil {
		return fmt.Errorf("marshal write request 2.0: %w", err)
	}
	return nil
}

func (e *encoder) symbolize(refs []uint32, ls []prompb.Label) []uint32 {
	for _, l := range ls {
		refs = append(refs, e.symbols.symbolize(l.Name), e.symbols.symbolize(l.Value))
	}
	return refs
}

// symbolizeLabels is symbolize for series i of l, without a string hashed:
// the payload's symbols are unique, and e.slots holds the request's ref+1
// of each one it added.
func (e *encoder) symbolizeLabels(refs []uint32, l *seriesLabels, i int32) []uint32 {
	names, values := l.seen.Series(int(i))
	syms := l.seen.Symbols()
	for j := range names {
		refs = append(refs, e.slot(syms, names[j]), e.slot(syms, values[j]))
	}
	return refs
}

func (e *encoder) slot(syms []string, sym uint32) uint32 {
	if ref := e.slots[sym]; ref != 0 {
		return ref - 1
	}
	ref := uint32(0) // "" is ref 0 in every request
	if syms[sym] != "" {
		ref = uint32(len(e.symbols.strings))
		e.symbols.strings = append(e.symbols.strings, syms[sym])
	}
	e.slots[sym] = ref + 1
	return ref
}

// requestBuilder cuts a decoded batch into requests of at most limit
// samples. The requests share labels and samples with the batch, and the
// builder keeps its buffers from one message to the next.
type requestBuilder struct {
	limit      int
	exemplars  bool // send_exemplars
	histograms bool // send_native_histograms
	series     []prompb.TimeSeries
	labels     *seriesLabels // of the block being built
	ids        []int32
	samples    int
	newest     int64

	// The samples of every series of a block payload, series i's from
	// sampleOffs[i] to sampleOffs[i+1].
	blockSamples []prompb.Sample
	sampleOffs   []int
}

// build calls send with each request of b, in series order. A series with
// more samples than fit is split over consecutive requests, oldest first,
// so every request stays within the limit and order is kept. build stops
// at the first error send returns.
func (w *requestBuilder) build(b *proto.Batch, send func(request) error) error {
	w.labels = nil
	w.reset()
	for i := range b.Series {
		ts := b.Series[i]
		if !w.histograms {
			ts.Histograms = nil
		}
		if !w.exemplars {
			ts.Exemplars = nil // else sent with the first piece of the series
		}
		if err := w.addSeries(ts, 0, send); err != nil {
			return err
		}
	}
	return w.finish(send)
}

// buildBlock is build for the BlockZstd payload r holds, whose series
// have the labels l: the requests are the same, with their labels apart.
// Such a payload has neither histograms nor exemplars.
func (w *requestBuilder) buildBlock(r *proto.BlockReader, l *seriesLabels, send func(request) error) error {
	w.labels = l
	w.reset()
	w.blockSamples, w.sampleOffs = w.blockSamples[:0], append(w.sampleOffs[:0], 0)
	for i := range r.Len() {
		w.blockSamples = r.AppendSamples(w.blockSamples, i)
		w.sampleOffs = append(w.sampleOffs, len(w.blockSamples))
	}
	for i := range r.Len() {
		samples := w.blockSamples[w.sampleOffs[i]:w.sampleOffs[i+1]]
		if err := w.addSeries(prompb.TimeSeries{Samples: samples}, int32(i), send); err != nil {
			return err
		}
	}
	return w.finish(send)
}

// addSeries adds ts, series id of the block, in as many pieces as
// requests fill up.
func (w *requestBuilder) addSeries(ts prompb.TimeSeries, id int32, send func(request) error) error {
	samples, histograms, exemplars := ts.Samples, ts.Histograms, ts.Exemplars
	for len(samples)+len(histograms) > 0 {
		room := w.limit - w.samples
		piece := prompb.TimeSeries{Labels: ts.Labels, Exemplars: exemplars}
		n := min(room, len(samples))
		piece.Samples, samples = samples[:n:n], samples[n:]
		h := min(room-n, len(histograms))
		piece.Histograms, histograms = histograms[:h:h], histograms[h:]
		exemplars = nil
		w.add(piece, id, n+h)
		if w.samples == w.limit {
			if err := w.flush(send); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *requestBuilder) finish(send func(request) error) error {
	if w.samples > 0 {
		return w.flush(send)
	}
	return nil
}

func (w *requestBuilder) add(piece prompb.TimeSeries, id int32, samples int) {
	for _, s := range piece.Samples {
		w.newest = max(w.newest, s.Timestamp)
	}
	for _, h := range piece.Histograms {
		w.newest = max(w.newest, h.Timestamp)
	}
	w.series = append(w.series, piece)
	if w.labels != nil {
		w.ids = append(w.ids, id)
	}
	w.samples += samples
}

func (w *requestBuilder) flush(send func(request) error) error {
	err := send(request{series: w.series, labels: w.labels, ids: w.ids, samples: w.samples, newest: w.newest})
	w.reset()
	return err
}

func (w *requestBuilder) reset() {
	clear(w.series) // drop references into the previous batch
	w.series = w.series[:0]
	w.ids = w.ids[:0]
	w.samples = 0
	w.newest = minMillis
}

const minMillis = -1 << 63

package proto

import (
	"fmt"
	"sync"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// MaxDecodedBytes bounds what one payload may decode to, so that a corrupt
// or hostile length prefix cannot make a stage allocate without limit.
const MaxDecodedBytes = 64 << 20

// Batch is the decoded payload of one message: series with their samples,
// labels sorted by name.
type Batch struct {
	Series []prompb.TimeSeries
}

// Reset empties b and keeps its capacity.
func (b *Batch) Reset() { b.Series = b.Series[:0] }

// Samples counts the float samples in b.
func (b *Batch) Samples() int {
	n := 0
	for i := range b.Series {
		n += len(b.Series[i].Samples)
	}
	return n
}

// Encoding turns a Batch into a payload and back. Implementations are safe
// for concurrent use. The encoding of a message is named in its
// Weir-Encoding header, so a faster one can be introduced while the old one
// is still in the streams.
type Encoding interface {
	// Name is the value of the Weir-Encoding header.
	Name() string
	// Append appends the encoding of b to dst.
	Append(dst []byte, b *Batch) ([]byte, error)
	// Decode replaces the contents of b with the series in src. Errors wrap
	// ErrMalformed or ErrTooLarge.
	Decode(src []byte, b *Batch) error
}

// DefaultEncoding is what collectors publish: BlockZstd, about 5.3 bytes
// per sample of a cAdvisor scrape against 42 for SnappyPRW1, and faster to
// decode (BENCHMARKS.md, "Wire encoding").
var DefaultEncoding Encoding = BlockZstd{}

// encodings are every encoding a stage can decode, by header value:
// messages in an older encoding may still be in the streams.
var encodings = map[string]Encoding{
	SnappyPRW1{}.Name(): SnappyPRW1{},
	BlockZstd{}.Name():  BlockZstd{},
	block1Name:          BlockZstd{},
}

// EncodingByName returns the encoding named by a Weir-Encoding header.
func EncodingByName(name string) (Encoding, error) {
	if e, ok := encodings[name]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownEncoding, name)
}

// SnappyPRW1 is a snappy-compressed remote-write 1.0 WriteRequest: the format
// every remote-write receiver already speaks.
type SnappyPRW1 struct{}

var _ Encoding = SnappyPRW1{}

// Name implements Encoding.
func (SnappyPRW1) Name() string { return "prw1+snappy" }

var marshalPool = sync.Pool{New: func() any { return new([]byte) }}

// Append implements Encoding.
func (SnappyPRW1) Append(dst []byte, b *Batch) ([]byte, error) {
	wr := prompb.WriteRequest{Timeseries: b.Series}
	bufp := marshalPool.Get().(*[]byte)
	defer marshalPool.Put(bufp)
	size := wr.Size()
	if cap(*bufp) < size {
		*bufp = make([]byte, size)
	}
	raw := (*bufp)[:size]
	if _, err := wr.MarshalToSizedBuffer(raw); err != nil {
		return dst, fmt.Errorf("marshal write request: %w", err)
	}
	n := snappy.MaxEncodedLen(size)
	if cap(dst)-len(dst) < n {
		grown := make([]byte, len(dst), len(dst)+n)
		copy(grown, dst)
		dst = grown
	}
	enc := snappy.Encode(dst[len(dst):len(dst)+n], raw)
	return dst[:len(dst)+len(enc)], nil
}

// Decode implements Encoding.
func (SnappyPRW1) Decode(src []byte, b *Batch) error {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return fmt.Errorf("%w: snappy: %v", ErrMalformed, err)
	}
	if n > MaxDecodedBytes {
		return fmt.Errorf("%w: decodes to %d bytes, limit %d", ErrTooLarge, n, MaxDecodedBytes)
	}
	// A snappy copy element of 3 bytes yields at most 64: a longer claimed
	// length is corrupt, and is refused before its buffer is allocated.
	if n > 22*len(src)+64 {
		return fmt.Errorf("%w: snappy: %d bytes claim to decode to %d", ErrMalformed, len(src), n)
	}
	bufp := marshalPool.Get().(*[]byte)
	defer marshalPool.Put(bufp)
	if cap(*bufp) < n {
		*bufp = make([]byte, n)
	}
	raw, err := snappy.Decode((*bufp)[:n], src)
	if err != nil {
		return fmt.Errorf("%w: snappy: %v", ErrMalformed, err)
	}
	wr := prompb.WriteRequest{Timeseries: b.Series[:0]}
	if err := wr.Unmarshal(raw); err != nil {
		b.Reset()
		return fmt.Errorf("%w: write request: %v", ErrMalformed, err)
	}
	b.Series = wr.Timeseries
	if err := validate(b); err != nil {
		b.Reset()
		return err
	}
	return nil
}

// validate rejects what no backend would accept: a series without labels,
// an empty label name, labels out of order.
func validate(b *Batch) error {
	for i := range b.Series {
		if err := validateLabels(i, b.Series[i].Labels); err != nil {
			return err
		}
	}
	return nil
}

// validateLabels is validate for series i.
func validateLabels(i int, ls []prompb.Label) error {
	if len(ls) == 0 {
		return fmt.Errorf("%w: series %d has no labels", ErrMalformed, i)
	}
	for j := range ls {
		if ls[j].Name == "" {
			return fmt.Errorf("%w: series %d label %d has an empty name", ErrMalformed, i, j)
		}
		if j > 0 && ls[j-1].Name >= ls[j].Name {
			return fmt.Errorf("%w: series %d labels not sorted at %q", ErrMalformed, i, ls[j].Name)
		}
	}
	return nil
}

// Chunk is one payload of a scrape that EncodeChunks cut to size.
type Chunk struct {
	Payload []byte
	Samples int
}

// EncodeChunks encodes series into payloads of at most maxBytes each, in
// series order. A scrape that does not fit is split in halves until every
// half does; a single series that does not fit fails with ErrChunkTooLarge.
// Each payload is its own allocation of exactly its size, since an async
// publish (and a buffer while NATS is away) holds it until the server
// acknowledged it; the encoder's worst-case scratch space stays in a pool.
func EncodeChunks(enc Encoding, series []prompb.TimeSeries, maxBytes int) ([]Chunk, error) {
	encode := func(dst []byte, series []prompb.TimeSeries) ([]byte, error) {
		return enc.Append(dst, &Batch{Series: series})
	}
	samples := func(series []prompb.TimeSeries) int { return (&Batch{Series: series}).Samples() }
	return appendChunks(nil, encode, samples, series, maxBytes)
}

// chunkPool holds the scratch buffers payloads are encoded into.
var chunkPool = sync.Pool{New: func() any { return new([]byte) }}

// appendChunks appends to out the payloads of series, which encode writes
// and which hold samples(series) samples, as EncodeChunks cuts them.
func appendChunks[S any](out []Chunk, encode func(dst []byte, series []S) ([]byte, error), samples func([]S) int, series []S, maxBytes int) ([]Chunk, error) {
	bufp := chunkPool.Get().(*[]byte)
	payload, err := encode((*bufp)[:0], series)
	var chunk Chunk
	if err == nil && len(payload) <= maxBytes {
		exact := make([]byte, len(payload))
		copy(exact, payload)
		chunk = Chunk{Payload: exact, Samples: samples(series)}
	}
	size := len(payload)
	if cap(payload) <= MaxDecodedBytes {
		*bufp = payload
	}
	chunkPool.Put(bufp) // before the halves below take their own
	switch {
	case err != nil:
		return out, err
	case chunk.Payload != nil:
		return append(out, chunk), nil
	case len(series) <= 1:
		return out, fmt.Errorf("%w: %d bytes, limit %d", ErrChunkTooLarge, size, maxBytes)
	}
	mid := len(series) / 2
	if out, err = appendChunks(out, encode, samples, series[:mid], maxBytes); err != nil {
		return out, err
	}
	return appendChunks(out, encode, samples, series[mid:], maxBytes)
}

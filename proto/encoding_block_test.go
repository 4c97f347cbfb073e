package proto

import (
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// TestEncodingsRoundTripCaptures checks that every encoding gives back
// every series of every real capture exactly: labels, value bits (NaN and
// infinities included) and timestamps.
func TestEncodingsRoundTripCaptures(t *testing.T) {
	for _, name := range textCaptures {
		in := Batch{Series: captureSeries(t, name)}
		// Values a scrape carries that plain text round trips would hide.
		in.Series[0].Samples[0].Value = math.Float64frombits(0x7ff8000000000001) // Prometheus' stale marker
		in.Series[len(in.Series)-1].Samples = append(in.Series[len(in.Series)-1].Samples,
			prompb.Sample{Value: math.Inf(-1), Timestamp: -5}, prompb.Sample{Value: 0, Timestamp: math.MaxInt64})
		for _, enc := range []Encoding{SnappyPRW1{}, BlockZstd{}} {
			payload, err := enc.Append([]byte("prefix"), &in)
			if err != nil {
				t.Fatalf("%s %s: %v", name, enc.Name(), err)
			}
			if string(payload[:6]) != "prefix" {
				t.Fatalf("%s: Append did not append", enc.Name())
			}
			var out Batch
			if err := enc.Decode(payload[6:], &out); err != nil {
				t.Fatalf("%s %s: %v", name, enc.Name(), err)
			}
			if len(out.Series) != len(in.Series) {
				t.Fatalf("%s %s: %d series, want %d", name, enc.Name(), len(out.Series), len(in.Series))
			}
			for i := range in.Series {
				if !reflect.DeepEqual(in.Series[i].Labels, out.Series[i].Labels) || !sameSamples(in.Series[i].Samples, out.Series[i].Samples) {
					t.Fatalf("%s %s series %d: got %v, want %v", name, enc.Name(), i, out.Series[i], in.Series[i])
				}
			}
		}
	}
}

func sameSamples(a, b []prompb.Sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Timestamp != b[i].Timestamp || math.Float64bits(a[i].Value) != math.Float64bits(b[i].Value) {
			return false
		}
	}
	return true
}

// TestBlockZstdGoal is the goal of issue 3: the 1.35 cAdvisor capture
// stored in at most 8 bytes per sample.
func TestBlockZstdGoal(t *testing.T) {
	in := Batch{Series: captureSeries(t, fixtures.Cadvisor135)}
	payload, err := BlockZstd{}.Append(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	if per := float64(len(payload)) / float64(in.Samples()); per > 8 {
		t.Fatalf("%.2f bytes per sample, goal at most 8", per)
	}
	if DefaultEncoding.Name() != (BlockZstd{}).Name() {
		t.Fatalf("DefaultEncoding is %s", DefaultEncoding.Name())
	}
}

// TestBlockZstdSharesStrings checks that a decoded message holds one string
// per unique symbol: every series' __name__ label name is the same string.
func TestBlockZstdSharesStrings(t *testing.T) {
	in := Batch{Series: captureSeries(t, fixtures.Cadvisor135)}
	payload, err := BlockZstd{}.Append(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	var out Batch
	if err := (BlockZstd{}).Decode(payload, &out); err != nil {
		t.Fatal(err)
	}
	first := unsafe.StringData(out.Series[0].Labels[0].Value)
	for i, s := range out.Series {
		if s.Labels[0].Value == out.Series[0].Labels[0].Value && unsafe.StringData(s.Labels[0].Value) != first {
			t.Fatalf("series %d: equal label value %q is a separate string", i, s.Labels[0].Value)
		}
	}
}

// appendBlock1 appends the block1+zstd payload of b, as collectors wrote
// it before block2+zstd, for the tests that read one.
func appendBlock1(dst []byte, b *Batch) []byte {
	var s blockState
	raw := s.appendLabels(nil, b)
	raw[0] = block1Version
	for i := range b.Series {
		raw = binary.AppendUvarint(raw, uint64(len(b.Series[i].Samples)))
	}
	w := sampleWriter{raw: raw, first: true}
	for i := range b.Series {
		for _, smp := range b.Series[i].Samples {
			w.add(smp.Timestamp, smp.Value)
		}
	}
	dst, err := s.compress(dst, w, 0)
	if err != nil {
		panic(err)
	}
	return dst
}

// TestBlockZstdReadsBlock1 checks that payloads older collectors wrote
// decode to their series, by Decode and by a BlockReader.
func TestBlockZstdReadsBlock1(t *testing.T) {
	in := Batch{Series: captureSeries(t, fixtures.Cadvisor135)}
	enc, err := EncodingByName(block1Name)
	if err != nil {
		t.Fatal(err)
	}
	var out Batch
	if err := enc.Decode(appendBlock1(nil, &in), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Series) != len(in.Series) {
		t.Fatalf("%d series, want %d", len(out.Series), len(in.Series))
	}
	for i := range in.Series {
		if !reflect.DeepEqual(in.Series[i].Labels, out.Series[i].Labels) || !sameSamples(in.Series[i].Samples, out.Series[i].Samples) {
			t.Fatalf("series %d: got %v, want %v", i, out.Series[i], in.Series[i])
		}
	}
}

// split builds a block2+zstd payload of n series from its uncompressed
// frames.
func split(labels, samples []byte, n int) []byte {
	payload, err := appendLabelsFrame(nil, labels, n)
	if err != nil {
		panic(err)
	}
	return zstdEncoder().EncodeAll(samples, payload)
}

// TestBlockZstdSplitErrors checks that Decode refuses a block2+zstd
// payload whose frames do not agree, or are cut.
func TestBlockZstdSplitErrors(t *testing.T) {
	labels := append([]byte{blockVersion}, slices.Concat(uv(2, 1, 1), []byte("ab"), uv(1, 1, 0, 1))...)
	samples := slices.Concat(uv(1, 1, 0), make([]byte, 8))
	good := split(labels, samples, 1)
	tests := []decodeCase{
		{"labels length frame cut", good[:10], ErrMalformed},
		{"labels frame longer than the payload", slices.Concat(good[:8], []byte{0xff, 0xff, 0, 0}, good[12:]), ErrMalformed},
		{"samples frame missing", good[:splitHeaderLen+int(binary.LittleEndian.Uint32(good[8:]))], ErrMalformed},
		{"labels of another version", split(append([]byte{block1Version}, labels[1:]...), samples, 1), ErrMalformed},
		{"labels of two series, samples of one", split(append([]byte{blockVersion}, slices.Concat(uv(2, 1, 1), []byte("ab"), uv(2, 1, 1, 0, 0, 1, 1))...), samples, 1), ErrMalformed},
		{"first frame's series count not the samples'", split(labels, samples, 2), ErrMalformed},
		{"bytes after the label columns", split(append(slices.Clip(labels), 0), samples, 1), ErrMalformed},
		{"samples of two series, labels of one", split(labels, slices.Concat(uv(2, 1, 1, 0, 0), make([]byte, 16)), 2), ErrMalformed},
		{"labels frame not zstd", slices.Concat(good[:8], []byte{4, 0, 0, 0}, good[12:16], []byte("abcd"), good[splitHeaderLen+int(binary.LittleEndian.Uint32(good[8:])):]), ErrMalformed},
	}
	decodeFails(t, tests)
	var b Batch
	if err := (BlockZstd{}).Decode(good, &b); err != nil || len(b.Series) != 1 || b.Series[0].Labels[0].Name != "a" || b.Series[0].Labels[0].Value != "b" {
		t.Fatalf("hand-made good payload: %v, %v", err, b.Series)
	}
}

// TestBlockZstdSplitBomb checks that the two frames of a payload may not
// decode to more than MaxDecodedBytes together, and that the labels frame
// is checked before the samples frame is decompressed.
func TestBlockZstdSplitBomb(t *testing.T) {
	claim := func(size uint64) []byte {
		frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}
		frame = binary.LittleEndian.AppendUint64(frame, size)
		return append(frame, 0x01, 0x00, 0x00)
	}
	header := func(n int) []byte {
		h := binary.LittleEndian.AppendUint32(nil, skippableMagic)
		h = binary.LittleEndian.AppendUint32(h, 8)
		h = binary.LittleEndian.AppendUint32(h, uint32(n))
		return binary.LittleEndian.AppendUint32(h, 1)
	}
	// Padded, so that the claims are within what a block compresses to.
	half := append(claim(MaxDecodedBytes/2+1), make([]byte, MaxDecodedBytes/2/maxBlockRatio)...)
	var b Batch
	if err := (BlockZstd{}).Decode(slices.Concat(header(len(half)), half, half), &b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("two halves over the limit: Decode = %v, want ErrTooLarge", err)
	}
	big := claim(MaxDecodedBytes + 1)
	if err := (BlockZstd{}).Decode(slices.Concat(header(len(big)), big, zstdEncoder().EncodeAll([]byte{0}, nil)), &b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("labels over the limit: Decode = %v, want ErrTooLarge", err)
	}
}

// block builds an uncompressed block1 block from its columns, for the
// error cases.
func block(parts ...[]byte) []byte {
	raw := []byte{block1Version}
	for _, p := range parts {
		raw = append(raw, p...)
	}
	return zstdEncoder().EncodeAll(raw, nil)
}

func uv(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

// decodeCase is a payload Decode must refuse with wantErr.
type decodeCase struct {
	name    string
	in      []byte
	wantErr error
}

// decodeFails checks that Decode refuses each case and leaves no series.
func decodeFails(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			var b Batch
			if err := (BlockZstd{}).Decode(tt.in, &b); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode = %v, want %v", err, tt.wantErr)
			}
			if len(b.Series) != 0 {
				t.Fatalf("a failed Decode left %d series", len(b.Series))
			}
		})
	}
}

func TestBlockZstdDecodeErrors(t *testing.T) {
	good, err := BlockZstd{}.Append(nil, &Batch{Series: series(10)})
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 8)
	tests := []decodeCase{
		{"empty", nil, ErrMalformed},
		{"not zstd", []byte("hello world, not zstd"), ErrMalformed},
		{"truncated", good[:len(good)/2], ErrMalformed},
		{"wrong version", zstdEncoder().EncodeAll([]byte{9, 0, 0}, nil), ErrMalformed},
		{"symbol count beyond the block", block(uv(1 << 40)), ErrMalformed},
		{"symbol bytes missing", block(uv(1, 50), []byte("ab")), ErrMalformed},
		{"series count beyond the block", block(uv(0, 1<<30)), ErrMalformed},
		{"label count beyond the block", block(uv(1, 1), []byte("a"), uv(1, 1<<20)), ErrMalformed},
		{"label ref past the symbols", block(uv(1, 1), []byte("a"), uv(1, 1, 7, 0, 1), uv(0), value), ErrMalformed},
		{"sample count beyond the block", block(uv(1, 1), []byte("a"), uv(1, 1, 0, 0, 1<<30)), ErrMalformed},
		{"values missing", block(uv(1, 1), []byte("a"), uv(1, 1, 0, 0, 1), uv(0), value[:7]), ErrMalformed},
		{"trailing bytes", block(uv(1, 1), []byte("a"), uv(1, 1, 0, 0, 1), uv(0), value, []byte{1}), ErrMalformed},
		{"empty label name", block(uv(2, 0, 1), []byte("a"), uv(1, 1, 0, 1, 1), uv(0), value), ErrMalformed},
		{"series without labels", block(uv(0, 1, 0, 1), uv(0), value), ErrMalformed},
		{"unsorted labels", block(uv(2, 1, 1), []byte("ba"), uv(1, 2, 0, 1, 0, 0, 1), uv(0), value), ErrMalformed},
	}
	decodeFails(t, tests)
	// A good block of one series, so that the cases above fail for the
	// reason they name and not for a mistake in block().
	var b Batch
	if err := (BlockZstd{}).Decode(block(uv(2, 1, 1), []byte("ab"), uv(1, 1, 0, 1, 1), uv(0), value), &b); err != nil || len(b.Series) != 1 {
		t.Fatalf("hand-made good block: %v, %d series", err, len(b.Series))
	}
}

// TestBlockZstdDecodeBomb checks that a payload claiming to decompress to
// more than MaxDecodedBytes is refused before it is decompressed.
func TestBlockZstdDecodeBomb(t *testing.T) {
	// A frame header (magic, single segment with an 8-byte content size)
	// claiming one byte more than the limit, then a tiny block.
	bomb := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}
	bomb = binary.LittleEndian.AppendUint64(bomb, MaxDecodedBytes+1)
	bomb = append(bomb, 0x01, 0x00, 0x00)
	var b Batch
	if err := (BlockZstd{}).Decode(bomb, &b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode = %v, want ErrTooLarge", err)
	}
	// A size within the limit but far beyond what the payload can hold.
	small := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}
	small = binary.LittleEndian.AppendUint64(small, 1<<20)
	small = append(small, 0x01, 0x00, 0x00)
	if err := (BlockZstd{}).Decode(small, &b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Decode = %v, want ErrMalformed", err)
	}
}

// TestBlockSeries: the series count of a block2+zstd payload is read from
// its first frame, and nothing else passes for one.
func TestBlockSeries(t *testing.T) {
	in := Batch{Series: series(10)}
	payload, err := BlockZstd{}.Append(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := BlockSeries(payload); !ok || n != 10 {
		t.Fatalf("BlockSeries = %d, %v; want 10, true", n, ok)
	}
	for _, other := range [][]byte{appendBlock1(nil, &in), payload[:splitHeaderLen-1], []byte("not a payload at all")} {
		if n, ok := BlockSeries(other); ok {
			t.Errorf("BlockSeries(%q) = %d, true", other, n)
		}
	}
}

// TestBlockZstdRepeatedValues: a scrape whose samples all hold the same
// value and timestamp, as a target of zeros serves, compresses its samples
// frame far more than a block; it must still decode.
func TestBlockZstdRepeatedValues(t *testing.T) {
	series := captureSeries(t, fixtures.Cadvisor135)
	for i := range series {
		series[i].Samples = []prompb.Sample{{Value: 0, Timestamp: 1_700_000_000_000}}
	}
	payload, err := BlockZstd{}.Append(nil, &Batch{Series: series})
	if err != nil {
		t.Fatal(err)
	}
	var out Batch
	if err := (BlockZstd{}).Decode(payload, &out); err != nil || len(out.Series) != len(series) {
		t.Fatalf("decoded %d of %d series: %v", len(out.Series), len(series), err)
	}
}

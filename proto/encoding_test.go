package proto

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/golang/snappy"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
)

func series(n int) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, n)
	for i := range out {
		out[i] = prompb.TimeSeries{
			Labels: []prompb.Label{
				{Name: "__name__", Value: "container_cpu_usage_seconds_total"},
				{Name: "id", Value: "/kubepods/burstable/pod" + string(rune('a'+i%26))},
				{Name: "n", Value: string(rune('A' + i%50))},
			},
			Samples: []prompb.Sample{{Value: float64(i) + 0.5, Timestamp: 1_700_000_000_000 + int64(i)}},
		}
	}
	return out
}

func TestSnappyPRW1RoundTrip(t *testing.T) {
	in := Batch{Series: series(100)}
	in.Series[3].Samples[0].Value = math.Inf(1)
	payload, err := SnappyPRW1{}.Append([]byte("prefix"), &in)
	if err != nil {
		t.Fatal(err)
	}
	if string(payload[:6]) != "prefix" {
		t.Fatal("Append did not append")
	}
	enc, err := EncodingByName("prw1+snappy")
	if err != nil {
		t.Fatal(err)
	}
	var out Batch
	if err := enc.Decode(payload[6:], &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Series) != 100 || out.Samples() != 100 {
		t.Fatalf("decoded %d series, %d samples", len(out.Series), out.Samples())
	}
	for i := range in.Series {
		if !reflect.DeepEqual(in.Series[i], out.Series[i]) {
			t.Fatalf("series %d: got %v, want %v", i, out.Series[i], in.Series[i])
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	unsorted := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: []prompb.Label{{Name: "b", Value: "1"}, {Name: "a", Value: "2"}}}}}
	raw, _ := unsorted.Marshal()
	noLabels := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Samples: []prompb.Sample{{Value: 1}}}}}
	raw2, _ := noLabels.Marshal()
	huge := make([]byte, 0, 16)
	huge = append(huge, 0xff, 0xff, 0xff, 0xff, 0x0f) // snappy length prefix of 4 GiB
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{"not snappy", []byte("hello world"), ErrMalformed},
		{"snappy of garbage", snappy.Encode(nil, []byte{0xff, 0xff, 0xff}), ErrMalformed},
		{"unsorted labels", snappy.Encode(nil, raw), ErrMalformed},
		{"series without labels", snappy.Encode(nil, raw2), ErrMalformed},
		{"decodes too large", huge, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Batch
			if err := (SnappyPRW1{}).Decode(tt.in, &b); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := EncodingByName("zstd-v9"); !errors.Is(err, ErrUnknownEncoding) {
		t.Fatalf("EncodingByName = %v, want ErrUnknownEncoding", err)
	}
}

func TestEncodeChunks(t *testing.T) {
	for _, enc := range []Encoding{SnappyPRW1{}, BlockZstd{}} {
		t.Run(enc.Name(), func(t *testing.T) { testEncodeChunks(t, enc) })
	}
}

func testEncodeChunks(t *testing.T, enc Encoding) {
	in := captureSeries(t, fixtures.Kubelet121)
	whole, err := EncodeChunks(enc, in, 1<<20)
	if err != nil || len(whole) != 1 || whole[0].Samples != len(in) {
		t.Fatalf("one chunk expected, got %d (%v)", len(whole), err)
	}
	limit := len(whole[0].Payload) / 5
	chunks, err := EncodeChunks(enc, in, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) < 5 {
		t.Fatalf("got %d chunks under a limit of a fifth, want at least 5", len(chunks))
	}
	var got []prompb.TimeSeries
	for i, c := range chunks {
		if cap(c.Payload) != len(c.Payload) {
			t.Errorf("chunk %d holds %d bytes of capacity for a %d-byte payload", i, cap(c.Payload), len(c.Payload))
		}
		if len(c.Payload) > limit {
			t.Errorf("chunk %d is %d bytes, limit %d", i, len(c.Payload), limit)
		}
		var b Batch
		if err := enc.Decode(c.Payload, &b); err != nil {
			t.Fatal(err)
		}
		if b.Samples() != c.Samples {
			t.Errorf("chunk %d: header says %d samples, payload has %d", i, c.Samples, b.Samples())
		}
		got = append(got, b.Series...)
	}
	if len(got) != len(in) {
		t.Fatalf("chunks hold %d series, want %d", len(got), len(in))
	}
	for i := range in {
		if !reflect.DeepEqual(in[i], got[i]) {
			t.Fatalf("series %d out of order or changed", i)
		}
	}
	if _, err := EncodeChunks(enc, in[:1], 10); !errors.Is(err, ErrChunkTooLarge) {
		t.Fatalf("EncodeChunks of one series over the limit = %v, want ErrChunkTooLarge", err)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{MsgID: "c.n.cadvisor.1.0", Encoding: "prw1+snappy", ScrapeMillis: 1700000000000, Chunk: 1, Chunks: 3, Samples: 42}
	h := nats.Header{}
	m.SetHeaders(h)
	got, err := ParseMeta(h)
	if err != nil || got != m {
		t.Fatalf("ParseMeta = %+v, %v; want %+v", got, err, m)
	}
	for name, val := range map[string]string{HeaderChunk: "3/3", HeaderScrapeTime: "soon", HeaderSamples: "-1", HeaderEncoding: ""} {
		bad := nats.Header{}
		m.SetHeaders(bad)
		bad.Set(name, val)
		if _, err := ParseMeta(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s=%q: ParseMeta = %v, want ErrMalformed", name, val, err)
		}
	}
}

package sink

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "1", time.Second},
		{"seconds with spaces", " 30 ", 30 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"huge seconds capped", "99999999999999", maxRetryAfter},
		{"http date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"http date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"http date far ahead capped", now.Add(48 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
		{"garbage", "soon", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryAfter(tt.in, now); got != tt.want {
				t.Fatalf("retryAfter(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestBackoffDoublesToCapWithJitter(t *testing.T) {
	bo := newBackoff(QueueConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	for _, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceiling *= time.Millisecond
		if got := bo.wait(0); got < ceiling/2 || got > ceiling {
			t.Fatalf("wait = %s, want within [%s, %s]", got, ceiling/2, ceiling)
		}
	}
	if got := bo.wait(3 * time.Second); got != 3*time.Second {
		t.Fatalf("wait with Retry-After 3s = %s, want 3s: the backend's ask wins", got)
	}
	if got := bo.wait(time.Hour); got != maxRetryAfter {
		t.Fatalf("wait with Retry-After 1h = %s, want the cap %s", got, maxRetryAfter)
	}
}

func TestRetryableErrorUnwraps(t *testing.T) {
	inner := &statusError{code: 503, body: "busy"}
	var err error = RetryableError{Err: inner, After: time.Second}
	var re RetryableError
	if !errors.As(err, &re) || re.After != time.Second {
		t.Fatalf("errors.As(RetryableError) failed on %v", err)
	}
	var se *statusError
	if !errors.As(err, &se) || se.code != 503 {
		t.Fatalf("RetryableError does not unwrap to its cause: %v", err)
	}
	if got, want := err.Error(), "remote write answered HTTP 503: busy (retry after 1s)"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

// decodeRequest is what a receiver does with a request body.
// encodeV1 encodes r as remote write 1.0 with a fresh encoder.
func encodeV1(t testing.TB, r request) []byte {
	t.Helper()
	body, err := newEncoder().encode(r, protoV1)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func decodeRequest(t testing.TB, body []byte) prompb.WriteRequest {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return wr
}

func TestRequestBuilderSplitsSeriesInOrder(t *testing.T) {
	samples := func(from, n int) []prompb.Sample {
		out := make([]prompb.Sample, n)
		for i := range out {
			out[i] = prompb.Sample{Value: float64(from + i), Timestamp: int64(1000 * (from + i))}
		}
		return out
	}
	a := []prompb.Label{{Name: "__name__", Value: "a"}}
	b := []prompb.Label{{Name: "__name__", Value: "b"}, {Name: "le", Value: "1"}}
	h := []prompb.Label{{Name: "__name__", Value: "h"}}
	in := proto.Batch{Series: []prompb.TimeSeries{
		{Labels: a, Samples: samples(0, 5), Exemplars: []prompb.Exemplar{{Value: 1, Timestamp: 1}}},
		{Labels: b, Samples: samples(10, 12)},
		{Labels: h, Histograms: []prompb.Histogram{{Timestamp: 99_000}, {Timestamp: 100_000}}},
	}}
	w := requestBuilder{limit: 7, exemplars: true, histograms: true}
	var reqs []prompb.WriteRequest
	var counted, newest []int64
	err := w.build(&in, func(r request) error {
		reqs = append(reqs, decodeRequest(t, encodeV1(t, r)))
		counted = append(counted, int64(r.samples))
		newest = append(newest, r.newest)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// 5+12+2 = 19 samples in requests of 7, 7, 5.
	if want := []int64{7, 7, 5}; !slices.Equal(counted, want) {
		t.Fatalf("request sizes %v, want %v", counted, want)
	}
	if want := []int64{11_000, 18_000, 100_000}; !slices.Equal(newest, want) {
		t.Fatalf("newest timestamps %v, want %v", newest, want)
	}
	got := map[string][]int64{}
	exemplars := 0
	for i, wr := range reqs {
		n := 0
		for _, ts := range wr.Timeseries {
			n += len(ts.Samples) + len(ts.Histograms)
			exemplars += len(ts.Exemplars)
			name := ts.Labels[0].Value
			for _, s := range ts.Samples {
				got[name] = append(got[name], s.Timestamp)
			}
			for _, h := range ts.Histograms {
				got[name] = append(got[name], h.Timestamp)
			}
		}
		if int64(n) != counted[i] {
			t.Errorf("request %d holds %d samples, builder said %d", i, n, counted[i])
		}
	}
	for _, ts := range in.Series {
		var want []int64
		for _, s := range ts.Samples {
			want = append(want, s.Timestamp)
		}
		for _, h := range ts.Histograms {
			want = append(want, h.Timestamp)
		}
		if name := ts.Labels[0].Value; !slices.Equal(got[name], want) {
			t.Errorf("series %s sent as %v, want %v", name, got[name], want)
		}
	}
	if exemplars != 1 {
		t.Errorf("sent %d exemplars, want 1", exemplars)
	}
}

func TestRequestBuilderReusesBuffers(t *testing.T) {
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	b := proto.Batch{Series: series}
	w := requestBuilder{limit: 100, exemplars: true, histograms: true}
	enc := newEncoder()
	send := func(r request) error {
		for _, p := range []protocol{protoV1, protoV2} {
			body, err := enc.encode(r, p)
			if err != nil {
				return err
			}
			if len(body) == 0 {
				return errors.New("empty body")
			}
		}
		return nil
	}
	if err := w.build(&b, send); err != nil { // grows the buffers
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if err := w.build(&b, send); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("build and encode (1.0 and 2.0) allocate %v times per message once warm, want 0", allocs)
	}
}

// FuzzBuildRequests decodes arbitrary payloads and, for those that decode,
// checks that the requests built from them hold every sample, within the
// limit, and decode as remote write.
func FuzzBuildRequests(f *testing.F) {
	series := captureSeries(f, fixtures.KubeProxy121, scrapeMillis)
	for _, n := range []int{1, 7, len(series)} {
		payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: series[:n]})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(payload, uint16(n))
	}
	f.Add([]byte("not snappy"), uint16(3))
	f.Fuzz(func(t *testing.T, payload []byte, limit uint16) {
		var b proto.Batch
		if err := proto.DefaultEncoding.Decode(payload, &b); err != nil {
			return
		}
		w := requestBuilder{limit: int(limit%2000) + 1, exemplars: true, histograms: true}
		total := 0
		err := w.build(&b, func(r request) error {
			if r.samples > w.limit {
				t.Fatalf("request of %d samples, limit %d", r.samples, w.limit)
			}
			wr := decodeRequest(t, encodeV1(t, r))
			n := 0
			for _, ts := range wr.Timeseries {
				n += len(ts.Samples) + len(ts.Histograms)
			}
			if n != r.samples {
				t.Fatalf("request 1.0 holds %d samples, builder said %d", n, r.samples)
			}
			v2 := decodeRequestV2(t, encodeV2(t, r))
			if got := samplesV2(v2); got != r.samples {
				t.Fatalf("request 2.0 holds %d samples, builder said %d", got, r.samples)
			}
			total += n
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, ts := range b.Series {
			want += len(ts.Samples) + len(ts.Histograms)
		}
		if total != want {
			t.Fatalf("requests hold %d samples, batch %d", total, want)
		}
	})
}

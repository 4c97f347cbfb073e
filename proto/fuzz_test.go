package proto

import (
	"errors"
	"reflect"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// FuzzDecode feeds arbitrary payloads to every decoder: none may panic or
// allocate past its bounds, every failure is one of the documented errors,
// and what decodes encodes again to the same series. The seeds are every
// real capture (its first series) in every encoding.
func FuzzDecode(f *testing.F) {
	encs := []Encoding{SnappyPRW1{}, BlockZstd{}}
	addPayloadSeeds(f, encs)
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, enc := range encs {
			var b Batch
			err := enc.Decode(payload, &b)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("%s: Decode returned an undocumented error: %v", enc.Name(), err)
				}
				continue
			}
			if _, ok := enc.(SnappyPRW1); ok {
				// prompb leaves out a value equal to 0, as proto3 does, so
				// -0 comes back as 0.
				for i := range b.Series {
					for j := range b.Series[i].Samples {
						if b.Series[i].Samples[j].Value == 0 {
							b.Series[i].Samples[j].Value = 0
						}
					}
				}
			}
			again, err := enc.Append(nil, &b)
			if err != nil {
				t.Fatal(err)
			}
			var b2 Batch
			if err := enc.Decode(again, &b2); err != nil || len(b2.Series) != len(b.Series) {
				t.Fatalf("%s re-decode: %v, %d series, want %d", enc.Name(), err, len(b2.Series), len(b.Series))
			}
			for i := range b.Series {
				if !reflect.DeepEqual(b.Series[i].Labels, b2.Series[i].Labels) || !sameSamples(b.Series[i].Samples, b2.Series[i].Samples) {
					t.Fatalf("%s series %d changed in a round trip: %v then %v", enc.Name(), i, b.Series[i], b2.Series[i])
				}
			}
		}
	})
}

// FuzzBlockReader feeds arbitrary payloads to a BlockReader read series by
// series, as the alerter reads it: nothing may panic, every failure is a
// documented error, and it reads exactly what Decode does: the same series
// when Decode succeeds, a failure of Reset or of some series' labels when
// Decode fails.
func FuzzBlockReader(f *testing.F) {
	addPayloadSeeds(f, []Encoding{BlockZstd{}})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var b Batch
		decodeErr := BlockZstd{}.Decode(payload, &b)
		var r BlockReader
		if err := r.Reset(payload); err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Reset returned an undocumented error: %v", err)
			}
			if decodeErr == nil || r.Len() != 0 {
				t.Fatalf("Reset failed (%v) with %d series left, Decode did not", err, r.Len())
			}
			return
		}
		var labelsErr error
		for i := range r.Len() {
			name, err := r.Name(i)
			ls, lerr := r.AppendLabels(nil, i)
			samples := r.AppendSamples(nil, i)
			if err != nil || lerr != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(lerr, ErrMalformed) {
					t.Fatalf("series %d: undocumented errors %v, %v", i, err, lerr)
				}
				labelsErr = errors.Join(err, lerr)
				continue
			}
			if decodeErr != nil {
				continue
			}
			if i >= len(b.Series) || !reflect.DeepEqual(ls, b.Series[i].Labels) || !sameSamples(samples, b.Series[i].Samples) {
				t.Fatalf("series %d: the reader read %v %v, Decode %v", i, ls, samples, b.Series[i:min(i+1, len(b.Series))])
			}
			if name != metricName(ls) {
				t.Fatalf("series %d: Name %q of labels %v", i, name, ls)
			}
		}
		if r.Len() == 0 {
			// No series asked for the labels; Decode reads them all the same.
			labelsErr = r.index()
		}
		if (decodeErr == nil) != (labelsErr == nil) || (decodeErr == nil && r.Len() != len(b.Series)) {
			t.Fatalf("Decode: %v, %d series; reader: %v, %d series", decodeErr, len(b.Series), labelsErr, r.Len())
		}
		if decodeErr != nil {
			return
		}
		// Matched against itself, a series is matched only to one with its
		// labels; read alone, its labels part holds the same labels.
		var seen SeenLabels
		if err := r.Keep(&seen); err != nil {
			t.Fatalf("Keep of a payload that decodes: %v", err)
		}
		matched, err := r.Match(&seen, nil)
		if err != nil || len(matched) != len(b.Series) {
			t.Fatalf("Match of a payload that decodes: %d of %d series, %v", len(matched), len(b.Series), err)
		}
		for i, k := range matched {
			if k >= 0 && !reflect.DeepEqual(b.Series[k].Labels, b.Series[i].Labels) {
				t.Fatalf("series %d %v matched to %d %v", i, b.Series[i].Labels, k, b.Series[k].Labels)
			}
		}
		if part := r.LabelsPart(); part != nil {
			var alone BlockReader
			if err := alone.ResetLabels(part); err != nil || alone.Len() != len(b.Series) {
				t.Fatalf("ResetLabels: %d series, %v", alone.Len(), err)
			}
			for i := range alone.Len() {
				if ls, err := alone.AppendLabels(nil, i); err != nil || !reflect.DeepEqual(ls, b.Series[i].Labels) {
					t.Fatalf("labels part alone, series %d: %v %v, want %v", i, ls, err, b.Series[i].Labels)
				}
			}
		}
	})
}

// addPayloadSeeds adds every real capture (its first series) in every
// encoding of encs, and a few broken payloads.
func addPayloadSeeds(f *testing.F, encs []Encoding) {
	for _, name := range textCaptures {
		// The first series of each capture: big seeds slow every
		// mutation down, and a few hundred series show every column.
		in := Batch{Series: captureFirstSeries(f, name, 100)}
		for _, enc := range encs {
			payload, err := enc.Append(nil, &in)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(payload)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("not snappy at all"))
	f.Add(snappy.Encode(nil, []byte{0x0a, 0x05, 0x0a, 0x03}))
	wr := prompb.WriteRequest{Timeseries: series(3)}
	raw, _ := wr.Marshal()
	f.Add(snappy.Encode(nil, raw[:len(raw)/2]))
	f.Add(zstdEncoder().EncodeAll([]byte{block1Version, 1, 1, 'a', 1, 1, 0, 0, 1, 0}, nil))
	in := Batch{Series: series(3)}
	f.Add(appendBlock1(nil, &in))
	// Well formed but for a label ref past the symbols, which a
	// BlockReader finds only when the labels are read.
	f.Add(block(uv(1, 1), []byte("a"), uv(1, 1, 7, 0, 1), uv(0), make([]byte, 8)))
}

// FuzzParseSubject checks that parsing never panics and that what parses
// prints back to a subject that parses to the same value.
func FuzzParseSubject(f *testing.F) {
	f.Add("weir.raw.c.n.kubelet")
	f.Add("weir.route.r.c.ip-1%2Ex.cadvisor")
	f.Add("weir.raw.%.%2.kubeproxy")
	f.Add("weir.enriched.c.n.summary.11")
	f.Fuzz(func(t *testing.T, subject string) {
		s, err := ParseSubject(subject)
		if err != nil {
			return
		}
		back, err := ParseSubject(s.String())
		s.Partition, s.Partitioned = 0, false // publishers never write it
		if err != nil || back != s {
			t.Fatalf("%q parsed to %+v, printed %q, parsed back to %+v (%v)", subject, s, s.String(), back, err)
		}
	})
}

package proto

import (
	"errors"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// FuzzDecode feeds arbitrary payloads to the decoder: it must never panic,
// and every failure must be one of the documented errors.
func FuzzDecode(f *testing.F) {
	good, _ := DefaultEncoding.Append(nil, &Batch{Series: series(20)})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("not snappy at all"))
	f.Add(snappy.Encode(nil, []byte{0x0a, 0x05, 0x0a, 0x03}))
	wr := prompb.WriteRequest{Timeseries: series(3)}
	raw, _ := wr.Marshal()
	f.Add(snappy.Encode(nil, raw[:len(raw)/2]))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var b Batch
		err := DefaultEncoding.Decode(payload, &b)
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Decode returned an undocumented error: %v", err)
		}
		if err == nil {
			// What decodes must encode again and decode to the same series.
			again, err := DefaultEncoding.Append(nil, &b)
			if err != nil {
				t.Fatal(err)
			}
			var b2 Batch
			if err := DefaultEncoding.Decode(again, &b2); err != nil || len(b2.Series) != len(b.Series) {
				t.Fatalf("re-decode: %v, %d series, want %d", err, len(b2.Series), len(b.Series))
			}
		}
	})
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

package buffer

import (
	"errors"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// captureScrape encodes the first series of a real capture as the
// collector would.
func captureScrape(t testing.TB, name string, chunkBytes int) *Scrape {
	t.Helper()
	p := textparse.NewPromParser(fixtures.Read(name), labels.NewSymbolTable(), false)
	var series []prompb.TimeSeries
	var lset labels.Labels
	for len(series) < 200 {
		entry, err := p.Next()
		if err != nil {
			break
		}
		if entry != textparse.EntrySeries {
			continue
		}
		_, _, v := p.Series()
		p.Labels(&lset)
		var ls []prompb.Label
		lset.Range(func(l labels.Label) { ls = append(ls, prompb.Label{Name: l.Name, Value: l.Value}) })
		series = append(series, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: 1_700_000_000_000}}})
	}
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, series, chunkBytes)
	if err != nil {
		t.Fatal(err)
	}
	return &Scrape{Subject: subjectOf("ip-10-0-0-1"), Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: 1_700_000_000_000, Chunks: chunks}
}

func TestRecordRoundTrip(t *testing.T) {
	in := captureScrape(t, fixtures.Cadvisor135, 4096)
	if len(in.Chunks) < 2 {
		t.Fatalf("%d chunks, want several", len(in.Chunks))
	}
	rec := appendRecord(nil, in)
	out, err := decodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed the scrape")
	}
	for cut := range len(rec) {
		if _, err := decodeRecord(rec[:cut]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record cut at %d of %d: %v, want ErrCorrupt", cut, len(rec), err)
		}
	}
}

// FuzzDecodeRecord feeds arbitrary bytes to the spool reader: it must never
// panic, every failure is ErrCorrupt, and what decodes encodes back to the
// same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, name := range []string{fixtures.Cadvisor135, fixtures.Kubelet121, fixtures.KubeProxy121, fixtures.Probes} {
		f.Add(appendRecord(nil, captureScrape(f, name, 2048)))
	}
	f.Add([]byte(recordMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decodeRecord(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		if again := appendRecord(nil, s); string(again) != string(data) {
			t.Fatalf("decoded record does not encode back to its bytes")
		}
	})
}

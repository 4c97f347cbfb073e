package enricher

import (
	"slices"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// FuzzJoin feeds arbitrary payloads through the decode, join and encode
// path of a message: no panic, and whatever decodes comes out with sorted,
// unique label names, the subject's cluster and node, and every scraped
// value kept (under its name or as exported_<name>).
func FuzzJoin(f *testing.F) {
	capture := captureBatch(f, fixtures.CadvisorPre116)
	seed, _ := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: capture.Series[:40]})
	f.Add(seed)
	conflict, _ := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: []prompb.TimeSeries{
		series("cluster", "a", "exported_cluster", "b", "node", "c", "namespace", "shop", "pod", "db-0"),
	}})
	f.Add(conflict)
	f.Add([]byte("garbage"))
	j := testJoiner()
	f.Fuzz(func(t *testing.T, payload []byte) {
		var b proto.Batch
		if err := proto.DefaultEncoding.Decode(payload, &b); err != nil {
			return
		}
		scraped := make([]int, len(b.Series))
		for i := range b.Series {
			scraped[i] = len(b.Series[i].Labels)
		}
		j.begin(nil, "c1", "n1")
		j.enrich(nil, &b)
		for i, s := range b.Series {
			names := make([]string, len(s.Labels))
			for k, l := range s.Labels {
				names[k] = l.Name
			}
			if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
				t.Fatalf("labels not sorted and unique: %v", s.Labels)
			}
			m := labelMap(t, s.Labels)
			if m["cluster"] != "c1" || m["node"] != "n1" {
				t.Fatalf("cluster or node missing: %v", m)
			}
			if len(s.Labels) != scraped[i]+2 {
				t.Fatalf("%d labels, want the %d scraped plus cluster and node: %v", len(s.Labels), scraped[i], s.Labels)
			}
		}
		if _, err := proto.EncodeChunks(proto.DefaultEncoding, b.Series, 1<<20); err != nil && len(b.Series) > 0 {
			t.Fatalf("enriched batch does not encode: %v", err)
		}
	})
}

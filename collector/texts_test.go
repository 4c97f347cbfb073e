package collector

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

// TestSeriesTextsUnderChurn replaces most pods at every scrape: the blocks
// of series texts stay bounded, and every series keeps its labels across
// the compactions that bound them.
func TestSeriesTextsUnderChurn(t *testing.T) {
	p := newParser(testTargetLabels)
	const pods, kept = 300, 20 // kept pods live through every scrape
	for scrape := range 30 {
		var body strings.Builder
		body.WriteString("# TYPE container_memory_working_set_bytes gauge\n")
		for i := range pods {
			pod := fmt.Sprintf("web-%d-%d", scrape, i)
			if i < kept {
				pod = fmt.Sprintf("db-%d", i)
			}
			fmt.Fprintf(&body, "container_memory_working_set_bytes{namespace=\"shop\",pod=%q} %d\n", pod, i)
		}
		var batch []proto.LabeledSample
		if _, err := p.parse(&batch, []byte(body.String()), textType, scrapeAt+int64(scrape)*15_000); err != nil {
			t.Fatal(err)
		}
		if held, live := p.texts.held, p.texts.live; held > 2*live+maxTextBlock {
			t.Fatalf("scrape %d: %d bytes of texts held for %d live", scrape, held, live)
		}
		var live int
		for text := range p.cache {
			live += len(text)
		}
		if live != p.texts.live {
			t.Fatalf("scrape %d: %d bytes of texts counted live, the cache has %d", scrape, p.texts.live, live)
		}
		got := map[string]bool{}
		for _, s := range batch {
			ls := s.Labels.AppendLabels(nil)
			if v := labelValue(ls, "__name__"); v != "container_memory_working_set_bytes" {
				t.Fatalf("scrape %d: series %v lost its name", scrape, ls)
			}
			got[labelValue(ls, "pod")] = true
		}
		for i := range kept {
			if pod := fmt.Sprintf("db-%d", i); !got[pod] {
				t.Fatalf("scrape %d: pod %s missing from %d series", scrape, pod, len(got))
			}
		}
	}
}

func labelValue(ls []prompb.Label, name string) string {
	for _, l := range ls {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

package router

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// FuzzDecodeRoutes: any file either loads into routes that compile, or
// fails with an error; it never panics.
func FuzzDecodeRoutes(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "routes.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("routes:\n  - name: a\n    match: ['{a=~\"(\"}']\n    expr: 'x =='\n"))
	f.Add([]byte("routes:\n  - name: a\n    write_relabel_configs:\n      - action: hashmod\n        modulus: 0\n"))
	f.Add([]byte("routes: [a, {name: b}, [c]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var file file
		if err := config.Load("fuzz.yaml", data, &file); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, r := range file.Routes {
			if _, err := compileRoute(r); err != nil {
				t.Fatalf("route %q loaded but does not compile: %v", r.Name, err)
			}
		}
	})
}

// FuzzRoute: any payload either fails to decode with an error, or is
// routed with every series accounted for and every kept series encodable.
func FuzzRoute(f *testing.F) {
	rt := compileForTest(f, benchRoutes()...)
	r := &Router{maxPayload: defaultMaxPayload, routes: rt.routes}
	w := &worker{r: r, rt: rt}
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	for _, name := range []string{fixtures.Cadvisor135, fixtures.Kubelet121, fixtures.Probes} {
		series := captureSeries(f, name, 1000)
		if len(series) > 50 {
			series = series[:50]
		}
		payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: series})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(payload)
	}
	f.Add([]byte("not snappy"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		if err := proto.DefaultEncoding.Decode(payload, &w.batch); err != nil {
			return
		}
		w.rt.route(subj, &w.batch)
		for i := range rt.routes {
			c := rt.counts[i]
			dropped := 0
			for _, d := range c.seriesDropped {
				dropped += d
			}
			if c.seriesIn != len(w.batch.Series) || c.seriesKept+dropped != c.seriesIn || c.seriesKept != len(rt.out[i]) {
				t.Fatalf("route %s: in %d, kept %d (%d out), dropped %d", rt.routes[i].name, c.seriesIn, c.seriesKept, len(rt.out[i]), dropped)
			}
		}
		if _, err := w.outputs(subj, proto.Meta{Encoding: proto.DefaultEncoding.Name()}, nil, payload); err != nil {
			t.Logf("outputs: %v", err) // a series larger than a message: an error, not a panic
		}
	})
}

package alerter

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// FuzzIngestWire: any bytes give kept samples or an ErrMalformed error,
// never a panic, and the store stays usable.
func FuzzIngestWire(f *testing.F) {
	series := captureSeries(f, fixtures.Kubelet121, "/metrics")
	wr := prompb.WriteRequest{Timeseries: series[:50]}
	raw, err := wr.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01})
	rs, err := LoadRules(packFiles(f), time.Minute)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := newStore(rs.sels, 60000, 300000)
		_, err := st.IngestWire(Target{Cluster: "c", Node: "n", Source: proto.SourceKubelet}, data)
		if err != nil && !errors.Is(err, proto.ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		for _, g := range rs.Groups {
			g.Eval(st, time.UnixMilli(0))
		}
	})
}

// FuzzLoadRules: any rule file loads or fails with an error naming the
// file, never a panic.
func FuzzLoadRules(f *testing.F) {
	for _, p := range packFiles(f) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(series(\"x\"), \"5m\") > 1\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		rs, err := LoadRules([]string{p}, time.Minute)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		st := newStore(rs.sels, 60000, 300000)
		for _, g := range rs.Groups {
			g.Eval(st, time.UnixMilli(0))
		}
	})
}

func packFiles(tb testing.TB) []string {
	all, err := filepath.Glob("rules/*.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, p := range all {
		if !strings.HasSuffix(p, "_test.yaml") {
			out = append(out, p)
		}
	}
	return out
}

// FuzzRuleTests: any unit test file of the default pack's layout runs or
// fails with an error, never a panic or unbounded work.
func FuzzRuleTests(f *testing.F) {
	tests, err := filepath.Glob("rules/*_test.yaml")
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	for _, p := range packFiles(f) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o600); err != nil {
			f.Fatal(err)
		}
	}
	for _, p := range tests {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(dir, "fuzz_test.yaml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = TestRules(p, io.Discard)
	})
}

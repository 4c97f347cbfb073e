package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/relabel"

	"github.com/weirmetrics/weir/internal/cli"
)

func TestEnricherSection(t *testing.T) {
	cfg, err := loadConfig("../../examples/weir.yaml", cli.Overrides{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Enricher
	if len(e.RelabelConfigs) != 1 || e.RelabelConfigs[0].Action != relabel.Drop || len(e.NodeLabels) != 4 || e.Cardinality.NewSeriesPerMinute != 50000 {
		t.Fatalf("example enricher section loaded as %+v", e.Config)
	}

	for _, tt := range []struct{ in, want string }{
		{"enricher:\n  clusters:\n    - name: a\n      kubeconfg: /x\n", "weir.yaml:4: enricher.clusters[0].kubeconfg: field kubeconfg not found"},
		{"enricher:\n  clusters:\n    - name: a\n", "enricher.clusters[0]: set exactly one of kubeconfig and in_cluster"},
		{"enricher:\n  pod_labels:\n    - {name: node, from: [x]}\n", `enricher.pod_labels[0].name: "node" is already set by built in`},
		{"enricher:\n  relabel_configs:\n    - action: keep\n      regex: (\n", "weir.yaml: error parsing regexp: missing closing )"},
	} {
		path := filepath.Join(t.TempDir(), "weir.yaml")
		writeFile(t, path, tt.in)
		_, err := loadConfig(path, cli.Overrides{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one containing %q", tt.in, err, tt.want)
		}
	}
}

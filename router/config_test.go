package router

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/proto"
)

// file is how a configuration file holds the routes.
type file struct {
	Routes []Route `yaml:"routes"`
}

func (f *file) Validate() error { return ValidateRoutes(f.Routes) }

func TestDecodeRoutes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "routes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f file
	if err := config.Load("routes.yaml", data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Routes) != 4 {
		t.Fatalf("decoded %d routes, want 4", len(f.Routes))
	}
	if s := f.Routes[3]; s.Name != "single" || len(s.Match) != 1 || s.Match[0] != `up{job="kubelet"}` {
		t.Errorf("a single selector without the list decoded as %+v", s)
	}
	c, v := f.Routes[0], f.Routes[1]
	if c.Name != "containers" || len(c.Match) != 1 || c.Match[0] != `{__name__=~"container_.*"}` || c.MaxAge != 48*time.Hour || c.MaxBytes != 20<<30 {
		t.Errorf("containers route decoded as %+v", c)
	}
	if v.Name != "vm" || !strings.Contains(v.Expr, `label("namespace")`) || len(v.WriteRelabelConfigs) != 2 {
		t.Fatalf("vm route decoded as %+v", v)
	}
	// Prometheus' defaults apply to what the file leaves out.
	drop := v.WriteRelabelConfigs[0]
	if drop.Action != relabel.Drop || drop.Separator != ";" || drop.Regex.String() != ".*_bucket" ||
		len(drop.SourceLabels) != 1 || drop.SourceLabels[0] != "__name__" || drop.NameValidationScheme != model.UTF8Validation {
		t.Errorf("first relabel config decoded as %+v", drop)
	}
	if rep := v.WriteRelabelConfigs[1]; rep.Action != relabel.Replace || rep.TargetLabel != "backend" || rep.Replacement != "victoria" {
		t.Errorf("second relabel config decoded as %+v", rep)
	}
	if f.Routes[2].Name != "everything" || len(f.Routes[2].Match) != 0 {
		t.Errorf("everything route decoded as %+v", f.Routes[2])
	}
}

// TestDecodeRouteErrors checks that every mistake is reported with the
// file, the line and the key, all at once.
func TestDecodeRouteErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings, each expected in the error
	}{
		{"bad name", `
routes:
  - name: Containers
    match: ['{job="x"}']
`, []string{"r.yaml:3: routes[0].name: must match [a-z0-9_-]+"}},
		{"missing name", `
routes:
  - match: ['{job="x"}']
`, []string{"r.yaml:3:", "name: required"}},
		{"bad selector", `
routes:
  - name: a
    match:
      - '{job="x"}'
      - '{job=~"("}'
`, []string{`r.yaml:6: routes[0].match[1]: selector "{job=~\"(\"}"`}},
		{"expr does not compile", `
routes:
  - name: a
    expr: 'label("x") =='
`, []string{`r.yaml:4: routes[0].expr: expr "label(\"x\") =="`}},
		{"expr not a bool", `
routes:
  - name: a
    expr: 'len(labels)'
`, []string{"r.yaml:4: routes[0].expr:", "expected bool"}},
		{"expr unknown name", `
routes:
  - name: a
    expr: 'lables.x == "1"'
`, []string{"r.yaml:4: routes[0].expr:", "unknown name lables"}},
		{"unknown key", `
routes:
  - name: a
    matches: ['{job="x"}']
`, []string{"r.yaml:4: routes[0].matches: field matches not found"}},
		{"unknown relabel key", `
routes:
  - name: a
    write_relabel_configs:
      - action: drop
        source_label: [__name__]
`, []string{"r.yaml:6: routes[0].write_relabel_configs[0].source_label: field source_label not found"}},
		{"unknown relabel action", `
routes:
  - name: a
    write_relabel_configs:
      - source_labels: [__name__]
        action: dorp
`, []string{`r.yaml:5:`, `unknown relabel action "dorp"`}},
		{"relabel that Prometheus rejects", `
routes:
  - name: a
    write_relabel_configs:
      - source_labels: [__name__]
        regex: x
        action: drop
      - action: replace
        replacement: y
`, []string{"r.yaml:8: routes[0].write_relabel_configs[1]", "requires 'target_label'"}},
		{"bad regex", `
routes:
  - name: a
    write_relabel_configs:
      - action: keep
        regex: '('
`, []string{"r.yaml:5: routes[0].write_relabel_configs[0]", "error parsing regexp"}},
		{"negative retention and bad size", `
routes:
  - name: a
    max_age: -1h
    max_bytes: lots
`, []string{"r.yaml:5: routes[0].max_bytes: bad size", "r.yaml:4: routes[0].max_age: must not be negative"}},
		{"every route reported", `
routes:
  - name: a
    match: ['{']
  - name: b
    expr: '=='
`, []string{"r.yaml:4: routes[0].match", "r.yaml:6: routes[1].expr"}},
		{"duplicate names", `
routes:
  - name: a
  - name: a
`, []string{`routes[a].name: "a" is also the name of routes[0]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f file
			err := config.Load("r.yaml", []byte(tc.yaml), &f)
			if err == nil {
				t.Fatalf("loaded %+v, want an error", f.Routes)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Route{Name: "ok"}
	for _, tc := range []struct {
		name string
		cfg  func(c *Config)
		want string
	}{
		{"valid", func(*Config) {}, ""},
		{"name charset", func(c *Config) { c.Routes[0].Name = "a.b" }, `routes[0].name: must match [a-z0-9_-]+`},
		{"name length", func(c *Config) { c.Routes[0].Name = strings.Repeat("a", 65) }, "routes[0].name: longer than 64"},
		{"selector", func(c *Config) { c.Routes[0].Match = []string{"up", "{"} }, "routes[ok].match[1]: selector"},
		{"expr", func(c *Config) { c.Routes[0].Expr = "x" }, "routes[ok].expr: expr \"x\""},
		{"nil relabel", func(c *Config) { c.Routes[0].WriteRelabelConfigs = []*relabel.Config{nil} }, "routes[ok].write_relabel_configs[0]: empty"},
		{"relabel", func(c *Config) {
			c.Routes[0].WriteRelabelConfigs = []*relabel.Config{{Action: relabel.HashMod, TargetLabel: "x", Regex: relabel.MustNewRegexp("")}}
		}, "routes[ok].write_relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus"},
		{"ack wait", func(c *Config) { c.AckWait = 0 }, "router.ack_wait"},
		{"publish timeout", func(c *Config) { c.PublishTimeout = c.AckWait }, "router.publish_timeout: must be positive and less than ack_wait"},
		{"max ack pending", func(c *Config) { c.MaxAckPending = 0 }, "router.max_ack_pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Routes = []Route{ok}
			tc.cfg(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tc.want == "":
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			case strings.HasPrefix(tc.want, "routes") && !errors.Is(err, ErrBadRoute):
				t.Fatalf("Validate = %v, want it to wrap ErrBadRoute", err)
			}
		})
	}
}

func TestRouteStreams(t *testing.T) {
	streams := proto.DefaultStreamsConfig()
	got := RouteStreams(streams, []Route{
		{Name: "fast"},
		{Name: "slow-backend", MaxAge: 72 * time.Hour, MaxBytes: 50 << 30},
		{Name: "short", MaxAge: time.Minute},
	})
	if got[0].Name != "WEIR_ROUTE_FAST" || got[0].MaxAge != streams.MaxAge || got[0].MaxBytes != int64(streams.MaxBytes) {
		t.Errorf("fast: %s max_age %s max_bytes %d, want the streams defaults", got[0].Name, got[0].MaxAge, got[0].MaxBytes)
	}
	if got[1].Name != "WEIR_ROUTE_SLOW-BACKEND" || got[1].MaxAge != 72*time.Hour || got[1].MaxBytes != 50<<30 {
		t.Errorf("slow-backend: %s max_age %s max_bytes %d", got[1].Name, got[1].MaxAge, got[1].MaxBytes)
	}
	if got[2].Duplicates > got[2].MaxAge {
		t.Errorf("short: duplicate window %s beyond max_age %s", got[2].Duplicates, got[2].MaxAge)
	}
	if got[1].Subjects[0] != "weir.route.slow-backend.>" {
		t.Errorf("slow-backend subjects %v", got[1].Subjects)
	}
}

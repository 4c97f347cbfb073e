package router

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v3"

	"github.com/weirmetrics/weir/internal/config"
)

// Config is the router: its routes and how it consumes WEIR_ENRICHED. In
// Weir's file the routes are the top-level `routes:` list and the rest is
// the `router:` section.
type Config struct {
	// Routes are applied to every series independently: a series may go to
	// several routes, or to none.
	Routes []Route `yaml:"-"`
	// AckWait is how long the server waits for an ack before redelivering;
	// the router extends it with InProgress while it retries a publish.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending bounds the messages delivered to the router and not yet
	// acknowledged, per partition.
	MaxAckPending int `yaml:"max_ack_pending"`
	// PublishTimeout bounds the wait for JetStream's acknowledgement of one
	// publish; a publish not acknowledged in time is retried.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
}

// Route is one backend's share of the series. Its YAML form is
//
//	name: containers
//	match: ['{__name__=~"container_.*"}']
//	expr: 'label("namespace") != "kube-system"'
//	write_relabel_configs: [...]   # Prometheus' remote_write syntax
//	max_age: 48h                   # retention of the route's stream
//	max_bytes: 20GiB
type Route struct {
	// Name is [a-z0-9_-]+: it names the stream WEIR_ROUTE_<NAME> and the
	// subjects weir.route.<name>.….
	Name string `yaml:"name"`
	// Match holds PromQL series selectors such as {__name__=~"container_.*"}
	// or up{job="kubelet"}. A series is kept when it matches any of them,
	// as with Prometheus' match[] parameters; none keeps every series. In
	// YAML a single selector may be written without the list.
	Match []string `yaml:"match"`
	// Expr is an optional expr-lang predicate over the series; see Env.
	Expr string `yaml:"expr"`
	// WriteRelabelConfigs rewrite or drop series after Match and Expr
	// kept them, as Prometheus' remote_write write_relabel_configs do.
	WriteRelabelConfigs []*relabel.Config `yaml:"write_relabel_configs"`
	// MaxAge and MaxBytes are the retention of the route's stream; zero
	// takes the streams section's value.
	MaxAge   time.Duration   `yaml:"max_age"`
	MaxBytes config.ByteSize `yaml:"max_bytes"`
}

// DefaultConfig returns the defaults a configuration file overrides.
func DefaultConfig() Config {
	return Config{AckWait: 30 * time.Second, MaxAckPending: 256, PublishTimeout: 10 * time.Second}
}

const maxNameLen = 64

var nameRE = regexp.MustCompile(`^[a-z0-9_-]+$`)

// ErrBadRoute is wrapped by every error about a route's configuration.
var ErrBadRoute = errors.New("bad route")

// Validate reports every invalid field at once; each error names its path
// as in the configuration file: "routes[containers].match[1]".
func (c Config) Validate() error {
	var errs []error
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("router.ack_wait: must be at least 1s, got %s", c.AckWait))
	}
	if c.MaxAckPending <= 0 {
		errs = append(errs, fmt.Errorf("router.max_ack_pending: must be positive, got %d", c.MaxAckPending))
	}
	if c.PublishTimeout <= 0 || c.PublishTimeout >= c.AckWait {
		// Within AckWait, or the input is redelivered while its publish waits.
		errs = append(errs, fmt.Errorf("router.publish_timeout: must be positive and less than ack_wait (%s), got %s", c.AckWait, c.PublishTimeout))
	}
	errs = append(errs, ValidateRoutes(c.Routes))
	return errors.Join(errs...)
}

// ValidateRoutes checks every route and that no name is used twice.
func ValidateRoutes(routes []Route) error {
	var errs []error
	seen := map[string]int{}
	for i, r := range routes {
		path := fmt.Sprintf("routes[%d]", i)
		if nameRE.MatchString(r.Name) && len(r.Name) <= maxNameLen {
			path = "routes[" + r.Name + "]"
		}
		if j, dup := seen[r.Name]; dup && r.Name != "" {
			errs = append(errs, fmt.Errorf("%w: %s.name: %q is also the name of routes[%d]", ErrBadRoute, path, r.Name, j))
		}
		seen[r.Name] = i
		for _, fe := range checkRoute(&r) {
			errs = append(errs, fmt.Errorf("%w: %s.%s: %w", ErrBadRoute, path, fe.path(), fe.err))
		}
	}
	return errors.Join(errs...)
}

// fieldError is one invalid field of a route; index is -1 for a field
// that is not a list.
type fieldError struct {
	field string
	index int
	err   error
}

func (fe fieldError) path() string {
	if fe.index < 0 {
		return fe.field
	}
	return fmt.Sprintf("%s[%d]", fe.field, fe.index)
}

// checkRoute is the one place a route is checked, both for Validate (errors
// by path) and while decoding YAML (errors by line). It validates the
// relabel configs in place, which sets their name validation scheme.
func checkRoute(r *Route) []fieldError {
	var out []fieldError
	bad := func(field string, index int, err error) {
		out = append(out, fieldError{field, index, err})
	}
	switch {
	case r.Name == "":
		bad("name", -1, errors.New("required"))
	case len(r.Name) > maxNameLen:
		bad("name", -1, fmt.Errorf("longer than %d characters: %q", maxNameLen, r.Name))
	case !nameRE.MatchString(r.Name):
		bad("name", -1, fmt.Errorf("must match [a-z0-9_-]+ (it names a stream and a subject token), got %q", r.Name))
	}
	for i, sel := range r.Match {
		if _, err := parseSelector(sel); err != nil {
			bad("match", i, err)
		}
	}
	if strings.TrimSpace(r.Expr) != "" {
		if _, err := compileExpr(r.Expr); err != nil {
			bad("expr", -1, err)
		}
	}
	for i, rc := range r.WriteRelabelConfigs {
		if rc == nil {
			bad("write_relabel_configs", i, errors.New("empty"))
			continue
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			bad("write_relabel_configs", i, err)
		}
	}
	if r.MaxAge < 0 {
		bad("max_age", -1, fmt.Errorf("must not be negative, got %s", r.MaxAge))
	}
	if r.MaxBytes < 0 {
		bad("max_bytes", -1, fmt.Errorf("must not be negative, got %d", r.MaxBytes))
	}
	return out
}

// routeKeys are the keys a route may have in YAML.
var routeKeys = map[string]bool{
	"name": true, "match": true, "expr": true, "write_relabel_configs": true, "max_age": true, "max_bytes": true,
}

// relabelKeys are the keys of one write_relabel_configs entry.
var relabelKeys = map[string]bool{
	"source_labels": true, "separator": true, "regex": true, "modulus": true,
	"target_label": true, "replacement": true, "action": true,
}

// UnmarshalYAML decodes a route strictly and checks it, reporting every
// mistake at its line: a bad selector, expression or relabel config is a
// configuration error, not a surprise at the first message.
func (r *Route) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return lineErrors{fmt.Sprintf("line %d: a route must be a mapping with a name", n.Line)}.typeError()
	}
	var errs lineErrors
	lines := map[string]int{}
	var items map[string][]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !routeKeys[k.Value] {
			errs.add(k.Line, "field %s not found in type router.Route", k.Value)
			continue
		}
		lines[k.Value] = k.Line
		if v.Kind == yaml.SequenceNode {
			if items == nil {
				items = map[string][]*yaml.Node{}
			}
			items[k.Value] = v.Content
		}
	}
	if len(errs) > 0 {
		return errs.typeError()
	}

	// Decode field by field, so that a relabel config's own error (an
	// unknown action, say) is reported at its entry's line.
	var plain struct {
		Name     string          `yaml:"name"`
		Match    yaml.Node       `yaml:"match"`
		Expr     string          `yaml:"expr"`
		Relabel  []yaml.Node     `yaml:"write_relabel_configs"`
		MaxAge   time.Duration   `yaml:"max_age"`
		MaxBytes config.ByteSize `yaml:"max_bytes"`
	}
	var te *yaml.TypeError
	if err := n.Decode(&plain); errors.As(err, &te) {
		// Keep going: the other fields decoded and are checked below.
		errs = append(errs, te.Errors...)
	} else if err != nil {
		return err
	}
	undecoded := map[int]bool{}
	*r = Route{Name: plain.Name, Expr: plain.Expr, MaxAge: plain.MaxAge, MaxBytes: plain.MaxBytes}
	switch m := &plain.Match; m.Kind {
	case 0: // absent
	case yaml.ScalarNode:
		if m.Tag == "!!null" {
			break
		}
		r.Match = []string{m.Value}
	default:
		if err := m.Decode(&r.Match); errors.As(err, &te) {
			errs = append(errs, te.Errors...)
		} else if err != nil {
			errs.add(m.Line, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
	for i := range plain.Relabel {
		item := &plain.Relabel[i]
		if item.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(item.Content); j += 2 {
				if k := item.Content[j]; !relabelKeys[k.Value] {
					errs.add(k.Line, "field %s not found in type relabel.Config", k.Value)
				}
			}
		}
		rc := new(relabel.Config)
		if err := item.Decode(rc); errors.As(err, &te) {
			errs = append(errs, te.Errors...)
			undecoded[i] = true
		} else if err != nil {
			errs.add(item.Line, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
			undecoded[i] = true
		}
		r.WriteRelabelConfigs = append(r.WriteRelabelConfigs, rc)
	}

	for _, fe := range checkRoute(r) {
		if fe.field == "write_relabel_configs" && undecoded[fe.index] {
			continue // its error is reported already
		}
		// At the field's own line the file's key path already names it.
		line, ok := lines[fe.field]
		if it := items[fe.field]; fe.index >= 0 && fe.index < len(it) {
			line = it[fe.index].Line
		}
		if ok {
			errs.add(line, "%v", fe.err)
		} else {
			errs.add(n.Line, "%s: %v", fe.path(), fe.err)
		}
	}
	if len(errs) > 0 {
		return errs.typeError()
	}
	return nil
}

// lineErrors are messages "line N: …", which internal/config turns into
// "file:N: key.path: …".
type lineErrors []string

func (e *lineErrors) add(line int, format string, args ...any) {
	*e = append(*e, fmt.Sprintf("line %d: %s", line, fmt.Sprintf(format, args...)))
}

// typeError lets yaml collect these with the errors of the other fields,
// so every mistake of a file is reported at once.
func (e lineErrors) typeError() error { return &yaml.TypeError{Errors: e} }

package proto

import (
	"fmt"
	"strconv"
	"strings"
)

// Source is the kind of endpoint a scrape came from. It is the last token
// of every data subject.
type Source string

// The sources a collector scrapes.
const (
	SourceKubelet   Source = "kubelet"   // kubelet /metrics
	SourceCadvisor  Source = "cadvisor"  // kubelet /metrics/cadvisor
	SourceResource  Source = "resource"  // kubelet /metrics/resource
	SourceProbes    Source = "probes"    // kubelet /metrics/probes
	SourceSummary   Source = "summary"   // kubelet /stats/summary
	SourceKubeProxy Source = "kubeproxy" // kube-proxy :10249/metrics
	// SourceKubeProxyHealth is kube-proxy :10256/healthz, as health metrics.
	SourceKubeProxyHealth Source = "proxyhealth"
)

// Sources lists every known source, in a stable order.
var Sources = []Source{SourceKubelet, SourceCadvisor, SourceResource, SourceProbes, SourceSummary, SourceKubeProxy, SourceKubeProxyHealth}

// Valid reports whether s is a known source.
func (s Source) Valid() bool {
	for _, k := range Sources {
		if s == k {
			return true
		}
	}
	return false
}

// Stages whose output is a data stream; they name the second subject token.
const (
	StageRaw      = "raw"
	StageEnriched = "enriched"
	StageRoute    = "route"
)

// Prefix is the first token of every Weir subject.
const Prefix = "weir"

// Subject identifies the origin of a message: weir.<stage>.<cluster>.<node>.<source>,
// or weir.route.<route>.<cluster>.<node>.<source> for a route.
//
// Publishers publish without a partition; the stream appends one more
// token, the partition number (see StreamsConfig.Partitions), so that the
// replicas of the next stage can share the work by partition and still see
// every target's scrapes in order. ParseSubject reads it into Partition.
type Subject struct {
	Stage   string
	Route   string // only for StageRoute
	Cluster string
	Node    string
	Source  Source
	// Partition is the partition token, when Partitioned.
	Partition   int
	Partitioned bool
}

// String returns the subject with each identity token escaped.
func (s Subject) String() string {
	var b strings.Builder
	b.Grow(len(Prefix) + len(s.Stage) + len(s.Route) + len(s.Cluster) + len(s.Node) + len(s.Source) + 8)
	b.WriteString(Prefix)
	b.WriteByte('.')
	b.WriteString(s.Stage)
	if s.Stage == StageRoute {
		b.WriteByte('.')
		b.WriteString(EscapeToken(s.Route))
	}
	b.WriteByte('.')
	b.WriteString(EscapeToken(s.Cluster))
	b.WriteByte('.')
	b.WriteString(EscapeToken(s.Node))
	b.WriteByte('.')
	b.WriteString(string(s.Source))
	return b.String()
}

// ParseSubject is the inverse of Subject.String. It also accepts the
// partition token a stream appends.
func ParseSubject(subject string) (Subject, error) {
	tok := strings.Split(subject, ".")
	if len(tok) < 5 || tok[0] != Prefix {
		return Subject{}, fmt.Errorf("%w: %q", ErrBadSubject, subject)
	}
	s := Subject{Stage: tok[1]}
	rest := tok[2:]
	if s.Stage == StageRoute {
		s.Route, rest = UnescapeToken(rest[0]), rest[1:]
	}
	switch len(rest) {
	case 3:
	case 4:
		p, err := strconv.Atoi(rest[3])
		if err != nil || p < 0 {
			return Subject{}, fmt.Errorf("%w: %q: partition %q is not a number", ErrBadSubject, subject, rest[3])
		}
		s.Partition, s.Partitioned = p, true
	default:
		if s.Stage == StageRoute {
			return Subject{}, fmt.Errorf("%w: %q: want weir.route.<route>.<cluster>.<node>.<source>[.<partition>]", ErrBadSubject, subject)
		}
		return Subject{}, fmt.Errorf("%w: %q: want weir.<stage>.<cluster>.<node>.<source>[.<partition>]", ErrBadSubject, subject)
	}
	s.Cluster, s.Node, s.Source = UnescapeToken(rest[0]), UnescapeToken(rest[1]), Source(rest[2])
	if !s.Source.Valid() {
		return Subject{}, fmt.Errorf("%w: %q: unknown source %q", ErrBadSubject, subject, s.Source)
	}
	if s.Cluster == "" || s.Node == "" {
		return Subject{}, fmt.Errorf("%w: %q: empty cluster or node", ErrBadSubject, subject)
	}
	return s, nil
}

// StreamFilter returns the wildcard subject that matches every message of a stage.
func StreamFilter(stage string) string { return Prefix + "." + stage + ".>" }

// RouteFilter returns the wildcard subject of every message of one route.
func RouteFilter(route string) string {
	return Prefix + "." + StageRoute + "." + EscapeToken(route) + ".>"
}

// PartitionFilter returns the subject that matches one partition of a
// stage (route is empty unless stage is StageRoute).
func PartitionFilter(stage, route string, partition int) string {
	if stage == StageRoute {
		return Prefix + "." + StageRoute + "." + EscapeToken(route) + ".*.*.*." + strconv.Itoa(partition)
	}
	return Prefix + "." + stage + ".*.*.*." + strconv.Itoa(partition)
}

// DeadSubject is where a stage puts the messages it cannot decode.
func DeadSubject(stage string) string { return Prefix + ".dead." + stage }

// EscapeToken makes s usable as one subject token. Node names are DNS names
// with dots, so '.', the wildcards, whitespace and '%' are percent-encoded;
// everything else passes unchanged, which keeps common names readable.
func EscapeToken(s string) string {
	if !needsEscape(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if escaped(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// UnescapeToken reverses EscapeToken. A malformed escape is kept as it is.
func UnescapeToken(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, ok := unhex(s[i+1]); ok {
				if lo, ok := unhex(s[i+2]); ok {
					b.WriteByte(hi<<4 | lo)
					i += 2
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func needsEscape(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if escaped(s[i]) {
			return true
		}
	}
	return false
}

func escaped(c byte) bool {
	return c == '.' || c == '*' || c == '>' || c == '%' || c <= ' ' || c >= 0x7f
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

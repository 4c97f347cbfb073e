package proto

import (
	"errors"
	"testing"
)

func TestSubjectRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Subject
		want string
	}{
		{"raw", Subject{Stage: StageRaw, Cluster: "prod-eu", Node: "node-1", Source: SourceCadvisor}, "weir.raw.prod-eu.node-1.cadvisor"},
		{"dotted node", Subject{Stage: StageRaw, Cluster: "c", Node: "ip-10-0-0-1.ec2.internal", Source: SourceKubelet}, "weir.raw.c.ip-10-0-0-1%2Eec2%2Einternal.kubelet"},
		{"wildcards and percent", Subject{Stage: StageEnriched, Cluster: "a*b>c", Node: "50%", Source: SourceKubeProxy}, "weir.enriched.a%2Ab%3Ec.50%25.kubeproxy"},
		{"route", Subject{Stage: StageRoute, Route: "vm.long", Cluster: "c", Node: "n", Source: SourceProbes}, "weir.route.vm%2Elong.c.n.probes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.String()
			if got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			back, err := ParseSubject(got)
			if err != nil {
				t.Fatalf("ParseSubject(%q): %v", got, err)
			}
			if back != tt.in {
				t.Fatalf("ParseSubject(%q) = %+v, want %+v", got, back, tt.in)
			}
		})
	}
}

func TestParseSubjectErrors(t *testing.T) {
	for _, in := range []string{
		"", "weir", "weir.raw.c.n", "nats.raw.c.n.kubelet", "weir.raw.c.n.nosuchsource",
		"weir.raw.c.n.kubelet.extra", "weir.route.c.n.kubelet", "weir.raw..n.kubelet",
	} {
		if _, err := ParseSubject(in); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParseSubject(%q) = %v, want ErrBadSubject", in, err)
		}
	}
}

func TestEscapeToken(t *testing.T) {
	for _, s := range []string{"", "plain", "a.b.c", "%", "%2E", "tab\there", "ünï", "x>y*z", "100%."} {
		e := EscapeToken(s)
		for i := 0; i < len(e); i++ {
			if c := e[i]; c == '.' || c == '*' || c == '>' || c <= ' ' || c >= 0x7f {
				t.Errorf("EscapeToken(%q) = %q holds %q", s, e, c)
			}
		}
		if back := UnescapeToken(e); back != s {
			t.Errorf("UnescapeToken(EscapeToken(%q)) = %q", s, back)
		}
	}
}

func TestMsgIDDiffersPerChunkAndScrape(t *testing.T) {
	s := Subject{Stage: StageRaw, Cluster: "c", Node: "n.x", Source: SourceCadvisor}
	ids := map[string]bool{}
	for _, ts := range []int64{1000, 2000} {
		for chunk := range 3 {
			ids[MsgID(s, ts, chunk)] = true
		}
	}
	if len(ids) != 6 {
		t.Fatalf("got %d distinct ids, want 6: %v", len(ids), ids)
	}
	// The id does not depend on the stage, so every stage republishes under it.
	e := s
	e.Stage = StageEnriched
	if MsgID(s, 1, 0) != MsgID(e, 1, 0) {
		t.Fatal("MsgID depends on the stage")
	}
}

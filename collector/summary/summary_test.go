package summary

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/weirmetrics/weir/internal/fixtures"
)

func convert(t *testing.T, name string) []Sample {
	t.Helper()
	s, err := Decode(fixtures.Read(name))
	if err != nil {
		t.Fatalf("Decode(%s): %v", name, err)
	}
	return s.Append(nil)
}

// find returns the sample whose labels are exactly want.
func find(t *testing.T, samples []Sample, want ...string) Sample {
	t.Helper()
	l := labels.FromStrings(want...)
	for _, s := range samples {
		if labels.Equal(s.Labels, l) {
			return s
		}
	}
	t.Fatalf("no sample %s", l)
	return Sample{}
}

func ms(t *testing.T, rfc3339 string) int64 {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMilli()
}

func TestSummary135(t *testing.T) {
	samples := convert(t, fixtures.Summary135)
	tests := []struct {
		name   string
		labels []string
		value  float64
		time   string // RFC 3339, "" for none
	}{
		// Values and times copied from the capture by hand.
		{"node cpu", []string{"__name__", "node_cpu_usage_seconds_total"}, 62.148052, "2026-06-26T10:14:35Z"},
		{"node working set", []string{"__name__", "node_memory_working_set_bytes"}, 917110784, "2026-06-26T10:14:35Z"},
		{"node fs available", []string{"__name__", "node_fs_available_bytes", "filesystem", "nodefs"}, 821203210240, "2026-06-26T10:14:35Z"},
		{"node fs capacity", []string{"__name__", "node_fs_capacity_bytes", "filesystem", "nodefs"}, 977896124416, "2026-06-26T10:14:35Z"},
		{"imagefs used", []string{"__name__", "node_fs_used_bytes", "filesystem", "imagefs"}, 1715707904, "2026-06-26T10:14:32Z"},
		{"rlimit", []string{"__name__", "node_processes_limit"}, 62639, "2026-06-26T10:14:40Z"},
		{"kubelet cpu", []string{"__name__", "system_container_cpu_usage_seconds_total", "system_container", "kubelet"}, 3.49296, "2026-06-26T10:14:31Z"},
		{"pod cpu", []string{"__name__", "pod_cpu_usage_seconds_total", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35"}, 1.944284, "2026-06-26T10:14:38Z"},
		{"pod working set", []string{"__name__", "pod_memory_working_set_bytes", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35"}, 66478080, "2026-06-26T10:14:38Z"},
		{"container cpu", []string{"__name__", "container_cpu_usage_seconds_total", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35", "container", "kube-controller-manager"}, 1.877547, "2026-06-26T10:14:29Z"},
		{"container working set", []string{"__name__", "container_memory_working_set_bytes", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35", "container", "kube-controller-manager"}, 66174976, "2026-06-26T10:14:29Z"},
		{"container pgfault", []string{"__name__", "container_memory_failures_total", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35", "container", "kube-controller-manager", "failure_type", "pgfault", "scope", "container"}, 7492, "2026-06-26T10:14:29Z"},
		{"container cpu psi", []string{"__name__", "container_pressure_cpu_stalled_seconds_total", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35", "container", "kube-controller-manager"}, 0.176526, "2026-06-26T10:14:29Z"},
		{"pod network", []string{"__name__", "container_network_receive_bytes_total", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35", "interface", "eth0"}, 772919385, "2026-06-26T10:14:28Z"},
		{"pod start", []string{"__name__", "pod_start_time_seconds", "namespace", "kube-system", "pod", "kube-controller-manager-datagen-1-35"}, float64(ms(t, "2026-06-26T10:12:10Z")) / 1000, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := find(t, samples, tt.labels...)
			if math.Abs(got.Value-tt.value) > 1e-9*math.Abs(tt.value) {
				t.Errorf("value = %v, want %v", got.Value, tt.value)
			}
			var wantMs int64
			if tt.time != "" {
				wantMs = ms(t, tt.time)
			}
			if got.TimestampMs != wantMs {
				t.Errorf("timestamp = %d, want %d", got.TimestampMs, wantMs)
			}
		})
	}
	assertUnique(t, samples)
}

func TestSummaryWindows(t *testing.T) {
	samples := convert(t, fixtures.SummaryWindows)
	// The Windows kubelet reports a default interface without a name and
	// containers without rssBytes; neither may become a sample.
	for _, s := range samples {
		if s.Labels.Get("interface") == "" && strings.Contains(s.Labels.Get("__name__"), "_network_") {
			t.Errorf("network sample without interface: %s", s.Labels)
		}
		if s.Labels.Get("__name__") == "container_memory_rss" {
			t.Errorf("container_memory_rss from a container that reports none: %s", s.Labels)
		}
	}
	find(t, samples, "__name__", "node_network_receive_bytes_total", "interface", "Hyper-V Virtual Ethernet Adapter _2")
	got := find(t, samples, "__name__", "container_cpu_usage_seconds_total", "namespace", "default", "pod", "dd-datadog-lbvkl", "container", "process-agent")
	if got.Value != 9.359375 || got.TimestampMs != ms(t, "2020-04-24T15:54:14Z") {
		t.Errorf("process-agent cpu = %v at %d", got.Value, got.TimestampMs)
	}
	v := find(t, samples, "__name__", "pod_volume_used_bytes", "namespace", "default", "pod", "dd-datadog-lbvkl", "volume", "config")
	if v.Value != 919980 {
		t.Errorf("volume used = %v, want 919980", v.Value)
	}
	find(t, samples, "__name__", "node_fs_available_bytes", "filesystem", "nodefs")
	assertUnique(t, samples)
}

func TestSummary2018(t *testing.T) {
	samples := convert(t, fixtures.Summary2018)
	got := find(t, samples, "__name__", "node_network_receive_bytes_total", "interface", "eth1")
	if got.Value != 5354431 {
		t.Errorf("eth1 rx = %v, want 5354431", got.Value)
	}
	// 2018 kubelets have no PSI: no pressure series at all.
	for _, s := range samples {
		if strings.Contains(s.Labels.Get("__name__"), "_pressure_") {
			t.Fatalf("pressure series from a summary without psi: %s", s.Labels)
		}
	}
	assertUnique(t, samples)
}

func assertUnique(t *testing.T, samples []Sample) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range samples {
		k := s.Labels.String()
		if seen[k] {
			t.Errorf("series %s twice", k)
		}
		seen[k] = true
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			t.Errorf("%s = %v", k, s.Value)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		wantMsg string
	}{
		{"empty", "  \n", ErrEmpty, ""},
		{"not json", "# HELP up\nup 1\n", nil, "decode at byte"},
		{"null", "null", nil, "node.nodeName is missing"},
		{"other object", `{"kind":"Status"}`, nil, "node.nodeName is missing"},
		{"wrong type", `{"node":{"nodeName":"n","cpu":{"usageNanoCores":"lots"}}}`, nil, "decode at byte"},
		{"negative counter", `{"node":{"nodeName":"n","cpu":{"usageNanoCores":-1}}}`, nil, "decode at byte"},
		{"trailing", `{"node":{"nodeName":"n"}} {}`, nil, "unexpected data after"},
		{"truncated", `{"node":{"nodeName":"n"`, nil, "decode at byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{fixtures.Summary135, fixtures.Summary2018, fixtures.SummaryWindows} {
		f.Add(fixtures.Read(name))
	}
	f.Add([]byte(`{"node":{"nodeName":"n","network":{"interfaces":[{"name":""}]}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := Decode(body)
		// What json-iterator decodes, encoding/json decodes the same.
		var fast, std Summary
		if fastDecodes(body, &fast) {
			if err := decodeStd(body, &std); err != nil || !reflect.DeepEqual(fast, std) {
				t.Fatalf("json-iterator decoded what encoding/json did not (%v):\n%+v\n%+v", err, fast, std)
			}
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "summary: ") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		for _, smp := range s.Append(nil) {
			if smp.Labels.Get("__name__") == "" {
				t.Fatalf("sample without a name: %s", smp.Labels)
			}
		}
	})
}

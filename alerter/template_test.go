package alerter

import "testing"

func TestTemplateFunctions(t *testing.T) {
	tests := []struct{ text, want string }{
		{`{{ humanize 1234567 }}`, "1.235M"},
		{`{{ humanize 0.0123 }}`, "12.3m"},
		{`{{ humanizeBytes 3221225472 }}`, "3Gi"},
		{`{{ humanizeBytes 512 }}`, "512"},
		{`{{ humanizeDuration 3725 }}`, "1h 2m 5s"},
		{`{{ humanizeDuration 90061 }}`, "1d 1h 1m 1s"},
		{`{{ humanizeDuration 0.25 }}`, "250ms"},
		{`{{ humanizePercentage 0.125 }}`, "12.5%"},
		{`{{ toUpper $labels.job }} {{ .Labels.node }} {{ $value }}`, "KUBELET n1 42"},
		{`{{ $labels.missing }}`, ""},
	}
	for _, tt := range tests {
		tm, err := parseTemplate("t", tt.text)
		if err != nil {
			t.Fatalf("%s: %v", tt.text, err)
		}
		got, err := expand(tm, tmplData{Labels: map[string]string{"job": "kubelet", "node": "n1"}, Value: 42})
		if err != nil || got != tt.want {
			t.Errorf("%s = %q, %v; want %q", tt.text, got, err, tt.want)
		}
	}
}

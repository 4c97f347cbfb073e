package alerter

import (
	"fmt"
	"math"
	"strings"
	"text/template"
	"time"
)

// templateFuncs are the functions of label and annotation templates, as
// Prometheus names them.
var templateFuncs = template.FuncMap{
	"humanize":           humanize,
	"humanize1024":       humanizeBytes,
	"humanizeBytes":      humanizeBytes,
	"humanizeDuration":   humanizeDuration,
	"humanizePercentage": func(v float64) string { return fmt.Sprintf("%.4g%%", v*100) },
	"toUpper":            strings.ToUpper,
	"toLower":            strings.ToLower,
	"title":              func(s string) string { return strings.ToUpper(s[:min(1, len(s))]) + s[min(1, len(s)):] },
}

// humanize writes v with an SI prefix: 1.5k, 2.3M, 12m.
func humanize(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprintf("%.4g", v)
	}
	if math.Abs(v) >= 1 {
		prefix := ""
		for _, p := range []string{"k", "M", "G", "T", "P", "E", "Z", "Y"} {
			if math.Abs(v) < 1000 {
				break
			}
			prefix = p
			v /= 1000
		}
		return fmt.Sprintf("%.4g%s", v, prefix)
	}
	prefix := ""
	for _, p := range []string{"m", "u", "n", "p", "f", "a", "z", "y"} {
		if math.Abs(v) >= 1 {
			break
		}
		prefix = p
		v *= 1000
	}
	return fmt.Sprintf("%.4g%s", v, prefix)
}

// humanizeBytes writes v with a binary prefix: 1.5Ki, 2Gi.
func humanizeBytes(v float64) string {
	if math.Abs(v) <= 1 || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprintf("%.4g", v)
	}
	prefix := ""
	for _, p := range []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"} {
		if math.Abs(v) < 1024 {
			break
		}
		prefix = p
		v /= 1024
	}
	return fmt.Sprintf("%.4g%s", v, prefix)
}

// humanizeDuration writes seconds as 1d 2h 3m 4s, or 12.3ms below a second.
func humanizeDuration(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprintf("%.4g", v)
	}
	if v == 0 {
		return "0s"
	}
	if math.Abs(v) < 1 {
		return strings.TrimPrefix(humanize(v)+"s", "")
	}
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	d := time.Duration(v * float64(time.Second))
	days := int64(d / (24 * time.Hour))
	h := int64(d/time.Hour) % 24
	m := int64(d/time.Minute) % 60
	s := math.Mod(v, 60)
	switch {
	case days > 0:
		return fmt.Sprintf("%s%dd %dh %dm %ds", sign, days, h, m, int64(s))
	case h > 0:
		return fmt.Sprintf("%s%dh %dm %ds", sign, h, m, int64(s))
	case m > 0:
		return fmt.Sprintf("%s%dm %ds", sign, m, int64(s))
	}
	return fmt.Sprintf("%s%.4gs", sign, s)
}

// tmplData is what a template reads: .Labels and .Value, also as $labels
// and $value.
type tmplData struct {
	Labels map[string]string
	Value  float64
}

const tmplHeader = "{{$labels := .Labels}}{{$value := .Value}}"

func parseTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Funcs(templateFuncs).Option("missingkey=zero").Parse(tmplHeader + text)
}

func expand(t *template.Template, d tmplData) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	return b.String(), nil
}

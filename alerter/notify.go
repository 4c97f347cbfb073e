package alerter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// StreamAlerts holds every alert state change, on
// weir.alerts.<cluster>.<alertname>.
const StreamAlerts = "WEIR_ALERTS"

// AlertsStream is the definition of WEIR_ALERTS: a week of state changes.
func AlertsStream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamAlerts,
		Description: "Every state change of every alert the alerter manages",
		Subjects:    []string{proto.Prefix + ".alerts.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      7 * 24 * time.Hour,
		MaxBytes:    1 << 30,
		Replicas:    replicas,
		Duplicates:  2 * time.Minute,
	}
}

// AlertSubject is where the changes of one alert are published.
func AlertSubject(cluster, alertname string) string {
	return proto.Prefix + ".alerts." + proto.EscapeToken(cluster) + "." + proto.EscapeToken(alertname)
}

// Event is one state change, as published to weir.alerts.
type Event struct {
	Alertname   string            `json:"alertname"`
	State       string            `json:"state"`
	Previous    string            `json:"previous"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Value       float64           `json:"value"`
	ActiveAt    time.Time         `json:"activeAt"`
	At          time.Time         `json:"at"`
	Group       string            `json:"group"`
}

// eventMsg builds the message of one transition; its id makes a replay
// after a crash a duplicate JetStream drops.
func eventMsg(g *Group, tr Transition, defaultCluster string) (*nats.Msg, error) {
	to := eventState(tr)
	tr.Rule.annotate(tr.Alert)
	ev := Event{
		Alertname: tr.Rule.Name, State: to, Previous: tr.From.String(), Labels: tr.Alert.Labels.Map(),
		Annotations: tr.Alert.Annotations, Value: tr.Alert.Value, ActiveAt: tr.Alert.ActiveAt, At: tr.At, Group: g.Name,
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	cluster := tr.Alert.Labels.Get("cluster")
	if cluster == "" {
		cluster = defaultCluster
	}
	m := nats.NewMsg(AlertSubject(cluster, tr.Rule.Name))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%016x.%s.%d", tr.Rule.key, tr.Alert.Labels.Hash(), to, tr.At.UnixNano()))
	return m, nil
}

// amAlert is an alert in Alertmanager's API v2.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// toSend picks the alerts of g due to be sent at ts and marks them sent: a
// firing alert is valid for four resend delays, so one lost post does not
// resolve it; a resolved one ends at its resolution.
func toSend(g *Group, ts time.Time, resendDelay time.Duration) []amAlert {
	var out []amAlert
	delta := max(resendDelay, g.Interval)
	for _, r := range g.Rules {
		for _, a := range r.Alerts() {
			if !a.needsSending(ts, resendDelay) {
				continue
			}
			r.annotate(a)
			a.LastSentAt, a.dirty = ts, true
			a.ValidUntil = ts.Add(4 * delta)
			am := amAlert{Labels: a.Labels.Map(), Annotations: a.Annotations, StartsAt: a.FiredAt, EndsAt: a.ValidUntil}
			if am.StartsAt.IsZero() {
				am.StartsAt = a.ActiveAt
			}
			if !a.ResolvedAt.IsZero() && a.State == StateInactive {
				am.EndsAt = a.ResolvedAt
			}
			out = append(out, am)
		}
	}
	return out
}

// notifier posts alerts to every Alertmanager at once.
type notifier struct {
	ams    []AlertmanagerConfig
	client *http.Client
	m      *metrics
}

// send posts alerts to every Alertmanager and returns the errors.
func (n *notifier) send(ctx context.Context, alerts []amAlert) []error {
	if len(alerts) == 0 || len(n.ams) == 0 {
		return nil
	}
	body, err := json.Marshal(alerts)
	if err != nil {
		return []error{err}
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, am := range n.ams {
		wg.Go(func() {
			name := am.URL.Redacted()
			if err := n.post(ctx, am, body); err != nil {
				n.m.notifyErrors.WithLabelValues(name).Inc()
				mu.Lock()
				errs = append(errs, fmt.Errorf("alertmanager %s: %w", name, err))
				mu.Unlock()
				return
			}
			n.m.notifications.WithLabelValues(name).Add(float64(len(alerts)))
		})
	}
	wg.Wait()
	return errs
}

func (n *notifier) post(ctx context.Context, am AlertmanagerConfig, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, am.Timeout)
	defer cancel()
	u := strings.TrimSuffix(am.URL.String(), "/") + "/api/v2/alerts"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("POST %s: %s: %s", u, resp.Status, bytes.TrimSpace(msg))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return nil
}

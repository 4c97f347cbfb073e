package alerter

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	messages        *prometheus.CounterVec // by result: ok, dead
	samplesIngested prometheus.Counter
	samplesKept     prometheus.Counter
	seriesSelected  prometheus.Gauge
	samplesHeld     prometheus.Gauge
	seriesDropped   prometheus.Counter
	ruleHealth      *prometheus.GaugeVec // by group, rule
	evalFailures    *prometheus.CounterVec
	evalDuration    *prometheus.HistogramVec
	alerts          *prometheus.GaugeVec // by state
	notifications   *prometheus.CounterVec
	notifyErrors    *prometheus.CounterVec
	transitions     *prometheus.CounterVec
	reloadOK        prometheus.Gauge
	reloads         *prometheus.CounterVec
	stateErrors     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		messages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_alerter_messages_total", Help: "Messages read from WEIR_ENRICHED, by result (ok, dead).",
		}, []string{"result"}),
		samplesIngested: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_alerter_samples_ingested_total", Help: "Samples read, selected by a rule or not.",
		}),
		samplesKept: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_alerter_samples_kept_total", Help: "Samples kept in a window because a rule selects their series.",
		}),
		seriesSelected: f.NewGauge(prometheus.GaugeOpts{
			Name: "weir_alerter_series_selected", Help: "Series whose windows the alerter holds.",
		}),
		samplesHeld: f.NewGauge(prometheus.GaugeOpts{
			Name: "weir_alerter_samples_held", Help: "Samples held in all windows.",
		}),
		seriesDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_alerter_series_dropped_total", Help: "Selected series not kept because alerter.max_series was reached.",
		}),
		ruleHealth: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_alerter_rule_health", Help: "1 when the rule's last evaluation worked, 0 when it failed.",
		}, []string{"group", "rule"}),
		evalFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_alerter_rule_evaluation_failures_total", Help: "Rule evaluations that failed, by group.",
		}, []string{"group"}),
		evalDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weir_alerter_group_evaluation_duration_seconds", Help: "Time to evaluate one group.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"group"}),
		alerts: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_alerter_alerts", Help: "Alerts by state.",
		}, []string{"state"}),
		notifications: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_alerter_notifications_sent_total", Help: "Alerts sent to Alertmanagers, counted once per Alertmanager.",
		}, []string{"alertmanager"}),
		notifyErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_alerter_notification_errors_total", Help: "Posts to an Alertmanager that failed.",
		}, []string{"alertmanager"}),
		transitions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_alerter_state_changes_total", Help: "Alert state changes published to weir.alerts, by new state.",
		}, []string{"state"}),
		reloadOK: f.NewGauge(prometheus.GaugeOpts{
			Name: "weir_alerter_config_last_reload_successful", Help: "1 when the last rule reload worked; 0 when a bad file left the old rules running.",
		}),
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_alerter_config_reloads_total", Help: "Rule reloads, by result (success, failure).",
		}, []string{"result"}),
		stateErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_alerter_state_errors_total", Help: "Writes to the alert state bucket or weir.alerts that failed.",
		}),
	}
}

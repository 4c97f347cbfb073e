package loadtest

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// event is one thing a scenario does at a point of the run.
type event struct {
	at   time.Duration
	what string
	do   func() error
}

type scenario struct {
	cfg    Config
	events []event
}

// newScenario lays out the events of cfg.Scenario over the run. Outages
// and storms hit every pipeline alike, peers included, so the comparison
// stays fair; restarts and kills hit Weir's processes.
func newScenario(cfg Config, pipes []*pipeline) *scenario {
	s := &scenario{cfg: cfg}
	d := cfg.Duration
	weir := pipes[0]
	add := func(at time.Duration, what string, do func() error) {
		s.events = append(s.events, event{at, what, do})
	}
	restart := func(pr *Proc, at, downFor time.Duration, stop func()) {
		add(at, "stop "+pr.Name, func() error { stop(); return nil })
		add(at+downFor, "start "+pr.Name, pr.Start)
	}
	switch cfg.Scenario {
	case ScenarioOutage:
		setDown := func(down bool) func() error {
			return func() error {
				for _, p := range pipes {
					p.receiver.SetDown(down)
				}
				return nil
			}
		}
		add(d/4, "backend down", setDown(true))
		add(d/2, "backend up", setDown(false))
	case ScenarioNATSRestart:
		nats := weir.proc("nats")
		restart(nats, d/3, min(5*time.Second, d/6), func() { nats.Stop(10 * time.Second) })
	case ScenarioKill:
		name := cfg.KillStage
		if cfg.Mode == ModeAll {
			name = "weir-all"
		}
		pr := weir.proc(name)
		restart(pr, d/3, time.Second, pr.Kill)
	case ScenarioChurnStorm:
		for at := d / 3; at < 2*d/3; at += cfg.Interval {
			add(at, "churn storm", func() error {
				for _, p := range pipes {
					p.fleet.Storm()
				}
				return nil
			})
		}
	}
	sort.SliceStable(s.events, func(i, j int) bool { return s.events[i].at < s.events[j].at })
	return s
}

// play runs the events in time and calls tick every ProgressEvery until
// the run's duration has passed since start.
func (s *scenario) play(ctx context.Context, start time.Time, tick func(elapsed time.Duration)) error {
	nextTick := s.cfg.ProgressEvery
	events := s.events
	said := ""
	for {
		elapsed := time.Since(start)
		for len(events) > 0 && events[0].at <= elapsed {
			e := events[0]
			events = events[1:]
			// A repeated event (each scrape of a storm) is printed once.
			if s.cfg.Progress != nil && e.what != said {
				said = e.what
				fmt.Fprintf(s.cfg.Progress, "%6s  %s\n", elapsed.Round(time.Second), e.what)
			}
			if err := e.do(); err != nil {
				return fmt.Errorf("scenario %s: %s: %w", s.cfg.Scenario, e.what, err)
			}
		}
		if elapsed >= nextTick {
			tick(elapsed)
			nextTick += s.cfg.ProgressEvery
		}
		if elapsed >= s.cfg.Duration {
			return nil
		}
		next := min(nextTick, s.cfg.Duration)
		if len(events) > 0 {
			next = min(next, events[0].at)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(next - elapsed):
		}
	}
}

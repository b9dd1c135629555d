package results

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// maxShortfall is the fraction of the planned load a level may miss before
// it is marked degraded.
const maxShortfall = 0.05

// levelPlan is what a level was planned to deliver, per docs/metrics.md
// ("Planned load"): requests when the load fixes a count, else agent time.
type levelPlan struct {
	// requests is the planned measured requests; 0 when the load fixes none
	// (a closed loop bounded by duration).
	requests float64
	// sigma is the standard deviation of the planned count for random
	// arrivals (Poisson, gamma); 0 for a fixed schedule.
	sigma float64
	// agentS is one agent's planned span in seconds, warm-up included,
	// for the coverage comparison; 0 when unknown.
	agentS float64
}

// planOf works out a level's plan from the sweep's load and the level's
// value (its concurrency or rate). ok is false when the load JSON cannot be
// read; the level is then not judged.
func planOf(load json.RawMessage, value float64) (levelPlan, bool) {
	if len(load) == 0 {
		return levelPlan{}, false
	}
	var m pb.LoadModel
	if err := pjsonIn.Unmarshal(load, &m); err != nil {
		return levelPlan{}, false
	}
	dur := float64(m.GetDurationMs()) / 1000
	p := levelPlan{agentS: float64(m.GetWarmupMs())/1000 + dur}
	if m.GetDurationMs() <= 0 {
		p.agentS = 0
	}
	if m.GetKind() == "closed" {
		// A count with no time bound is the plan; with a time bound too, the
		// first reached ends the level, so only the coverage is known.
		if m.GetRequests() > 0 && m.GetDurationMs() <= 0 {
			p.requests = float64(m.GetRequests())
		}
		return p, true
	}
	rate := value
	if m.GetKind() == "ramp" {
		rate = (m.GetStartRate() + value) / 2
	}
	if dur > 0 {
		p.requests = rate * dur
	}
	if n := float64(m.GetRequests()); n > 0 && (p.requests == 0 || n < p.requests) {
		p.requests = n
	}
	switch m.GetKind() {
	case "poisson":
		p.sigma = math.Sqrt(p.requests)
	case "gamma":
		k := m.GetBurstiness()
		if k <= 0 {
			k = 1
		}
		p.sigma = math.Sqrt(p.requests / k)
	}
	return p, true
}

// judgeShortfall compares what a level delivered with its plan and marks it
// degraded, with the shortfall in words, when it fell short by more than
// maxShortfall (and, for random arrivals, by more than three standard
// deviations of the arrival count). barrierNs is the level's start.
func judgeShortfall(load json.RawMessage, l *LevelResult, barrierNs int64) {
	plan, ok := planOf(load, l.Value)
	if !ok {
		return
	}
	if plan.requests > 0 {
		l.PlannedRequests = ptr(plan.requests)
		delivered := float64(l.Successes + l.Errors) // finished attempts; interrupted ones are not delivered load
		short := plan.requests - delivered
		if short > maxShortfall*plan.requests && short > 3*plan.sigma {
			l.Degraded = true
			l.Shortfall = fmt.Sprintf("delivered %.0f of %.0f planned requests (−%.1f%%)", delivered, plan.requests, 100*short/plan.requests)
		}
		return
	}
	if plan.agentS <= 0 || len(l.Coverage) == 0 {
		return
	}
	// A closed loop by duration has no fixed count: compare agent time.
	var planned, covered float64
	var who []string
	for a, c := range l.Coverage {
		planned += plan.agentS
		got := plan.agentS
		if !c.Final {
			got = 0
			if c.lastEndNs > 0 && barrierNs > 0 {
				got = math.Min(plan.agentS, math.Max(0, float64(c.lastEndNs-barrierNs)/1e9))
			}
			who = append(who, fmt.Sprintf("%s covered %.1f s of %.1f s", a, got, plan.agentS))
		}
		c.CoveredS = got
		covered += got
	}
	if short := planned - covered; short > maxShortfall*planned {
		sort.Strings(who)
		l.Degraded = true
		l.Shortfall = fmt.Sprintf("delivered %.1f of %.1f planned agent-seconds (−%.1f%%): %s", covered, planned, 100*short/planned, strings.Join(who, "; "))
	}
}

package results

import (
	"encoding/json"
	"strings"
	"testing"
)

func gridEvent(t *testing.T, kind string, v any) Event {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return Event{T: 1, Kind: kind, Data: b}
}

// TestGridWalk checks the walk every grid builder shares: points go from
// "not run" to their end, a point the run ended inside is interrupted,
// engine_ready's ready time goes to the point running, and each handler
// sees its events.
func TestGridWalk(t *testing.T) {
	start := GridStart{RunID: "r1", Experiment: "x", Profile: "p", API: "chat", Points: []GridPointInfo{
		{Point: 0, Label: "a", Knobs: json.RawMessage(`{"maxModelLen":4096}`)},
		{Point: 1, Label: "b", Knobs: json.RawMessage(`null`)},
		{Point: 2, Label: "c", Knobs: json.RawMessage(`{}`)},
	}}
	events := []Event{
		gridEvent(t, EventGridStart, start),
		gridEvent(t, EventGridPointStart, GridPointInfo{Point: 0}),
		gridEvent(t, EventEngineReady, map[string]any{"readyS": 2.5, "simulated": true, "model": "m"}),
		gridEvent(t, EventGridPointReady, GridPointReady{Point: 0}),
		gridEvent(t, EventGridLevelEnd, LevelObservation{Point: 0, Level: 1, Concurrency: 4}),
		gridEvent(t, EventGridPointEnd, GridPointEnd{Point: 0, Status: PointOK}),
		gridEvent(t, EventGridPointStart, GridPointInfo{Point: 1}),
		{T: 2, Kind: "custom", Data: json.RawMessage(`{}`)},
	}
	r, err := newGridRun(events)
	if err != nil {
		t.Fatal(err)
	}
	var starts, readies, levels, others int
	err = r.walk(events, gridHandlers{
		Start:      func(int) error { starts++; return nil },
		PointReady: func(int, GridPointReady) error { readies++; return nil },
		Level: func(_ int, o LevelObservation) error {
			if o.Concurrency != 4 {
				t.Errorf("level concurrency %d, want 4", o.Concurrency)
			}
			levels++
			return nil
		},
		Other: func(_ int, ev Event) error {
			if ev.Kind == "custom" {
				others++
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if starts != 1 || readies != 1 || levels != 1 || others != 1 {
		t.Errorf("handlers saw %d starts, %d readies, %d levels, %d custom events; want 1 each", starts, readies, levels, others)
	}
	if got := r.Knobs[0].GetMaxModelLen(); got != 4096 {
		t.Errorf("point 0 max_model_len %d, want 4096", got)
	}
	want := []string{PointOK, "interrupted", "not run"}
	for i, p := range r.Points {
		if p.Status != want[i] {
			t.Errorf("point %d status %q, want %q", i, p.Status, want[i])
		}
	}
	if r.Points[0].ReadyS == nil || *r.Points[0].ReadyS != 2.5 || r.Points[1].ReadyS != nil {
		t.Errorf("ready times %v, %v: want 2.5 on point 0 only", r.Points[0].ReadyS, r.Points[1].ReadyS)
	}
	h := r.head("x")
	if h.Kind != "x" || h.RunID != "r1" || h.Status != "incomplete" || !h.Simulated || r.Model != "m" {
		t.Errorf("head %+v, model %q", h, r.Model)
	}
}

func TestGridWalkRefuses(t *testing.T) {
	start := gridEvent(t, EventGridStart, GridStart{Experiment: "x", Points: []GridPointInfo{{Point: 0, Label: "a"}}})
	for name, c := range map[string]struct {
		events []Event
		want   string
	}{
		"no grid_start":  {[]Event{}, "no grid_start event"},
		"point first":    {[]Event{gridEvent(t, EventGridPointStart, GridPointInfo{Point: 0}), start}, "grid_point_start before grid_start"},
		"second start":   {[]Event{start, start}, "event 2: a second grid_start"},
		"unknown point":  {[]Event{start, gridEvent(t, EventGridLevelEnd, LevelObservation{Point: 1, Level: 1})}, "grid point 1 is not in grid_start's 1 points"},
		"bad knobs":      {[]Event{gridEvent(t, EventGridStart, GridStart{Experiment: "x", Points: []GridPointInfo{{Knobs: json.RawMessage(`{"maxModelLen":"x"}`)}}})}, "point 0 knobs"},
		"unknown status": {[]Event{start, gridEvent(t, EventGridPointEnd, GridPointEnd{Point: 0, Status: "odd"})}, `status "odd"`},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := newGridRun(c.events)
			if err != nil {
				t.Fatal(err)
			}
			err = r.walk(c.events, gridHandlers{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("walk: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

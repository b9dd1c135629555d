package plot

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
)

func wellFormed(t *testing.T, svg string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return
			}
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
	}
}

func TestBarsScaleToTheLargestValue(t *testing.T) {
	svg := Bars("TTFT <per run>", " ms", []Bar{{Label: "cold_1", Value: 420, Highlight: true}, {Label: "warm_1", Value: 20}, {Label: "warm_2", Value: math.NaN(), Note: "error: timeout"}, {Label: "warm_3", Value: math.NaN()}})
	wellFormed(t, svg)
	// Axis max is 500 (one 100 ms step past 420, not twice it); the plot
	// area is 760-190-90 = 480 px wide, so 420 ms is 403.2 px and 20 ms 19.2 px.
	for _, want := range []string{`width="403.2"`, `width="19.2"`, `fill="#d9534f"`, "error: timeout", "not measured", "TTFT &lt;per run&gt;", ">500 ms<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestGanttPlacesSpans(t *testing.T) {
	svg := Gantt("phases", []Span{{Label: "load", Start: 0, End: 5, Group: "log"}, {Label: "ready", Start: 5, End: 10, Group: "supervisor"}})
	wellFormed(t, svg)
	// Axis max 10 s: the second span starts at 190 + 480/2 = 430 px.
	if !strings.Contains(svg, `x="430.0"`) || !strings.Contains(svg, "5.00 s") {
		t.Errorf("span not placed at 430 px:\n%s", svg)
	}
}

func TestGanttSaysNotMeasuredAndDrawsInstants(t *testing.T) {
	svg := Gantt("phases", []Span{
		{Label: "spawn", Start: 0, End: 0, Group: "supervisor"},
		{Label: "weights_on_gpu", Group: "sampler", NotMeasured: true, Detail: "not observed: no NVML"},
		{Label: "load", Start: 0.5, End: 3, Group: "log"},
	})
	wellFormed(t, svg)
	if strings.Contains(svg, ">0.00 s<") {
		t.Errorf("an unmeasured or instant phase is drawn as a 0.00 s bar:\n%s", svg)
	}
	for _, want := range []string{"not observed: no NVML", "at 0.00 s", "2.50 s"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if got := strings.Count(svg, "<rect"); got != 2 { // background + one bar
		t.Errorf("%d rects, want 2 (background and the one measured span)", got)
	}
}

func TestTrimAvoidsExponents(t *testing.T) {
	for in, want := range map[float64]string{1000: "1000", 12345.6: "12346", 17.14: "17.1", 0.5: "0.5"} {
		if got := trim(in); got != want {
			t.Errorf("trim(%v) = %q, want %q", in, got, want)
		}
	}
}

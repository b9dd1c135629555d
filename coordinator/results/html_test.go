package results

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMarkdownToHTML(t *testing.T) {
	files := map[string][]byte{"a.svg": []byte(`<svg xmlns="http://www.w3.org/2000/svg" class="ttftlab-chart" id="a-chart"></svg>`)}
	tests := []struct {
		name, md string
		want     []string
		not      []string
	}{
		{name: "heading and paragraph", md: "# Title\n\nsome **bold** and `code`\ncontinued\n", want: []string{`<h1 id="title">Title</h1>`, "<p>some <strong>bold</strong> and <code>code</code> continued</p>"}},
		{name: "table with escaped pipe and numbers", md: "| a | b |\n|---|---:|\n| x \\| y | 1.5 ms |\n", want: []string{"<th>a</th>", "<td>x | y</td>", `<td class="num">1.5 ms</td>`}, not: []string{"---"}},
		{name: "svg image is inlined with a reset button", md: "![A plot](a.svg)\n", want: []string{`id="a-chart"`, `<button class="reset" data-for="a-chart"`, "<figcaption>A plot"}},
		{name: "missing image says so", md: "![B plot](b.svg)\n", want: []string{"B plot: not drawn (no data)"}},
		{name: "list and quote", md: "- one\n- two\n\n> note\n", want: []string{"<li>one</li>", "<li>two</li>", "<blockquote>note</blockquote>"}},
		{name: "markup in text is escaped", md: "- <script>alert(1)</script> **<img src=x onerror=alert(1)>**\n| <b>x</b> |\n", want: []string{"&lt;script&gt;", "&lt;img"}, not: []string{"<script>", "<img", "<b>x"}},
		{name: "nbsp indentation survives", md: "| &nbsp;&nbsp;↳ part |\n", want: []string{"<th>&nbsp;&nbsp;↳ part</th>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := markdownToHTML(tt.md, files)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("HTML lacks %q:\n%s", w, got)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("HTML has %q:\n%s", n, got)
				}
			}
		})
	}
}

// TestReportHTMLEscapesEventText renders a baseline whose prompt, error and
// warnings (all from events.jsonl, untrusted) carry markup: report.html
// holds it only escaped, is self-contained, and shows the failed status.
func TestReportHTMLEscapesEventText(t *testing.T) {
	evs := readFixtureEvents(t, "baseline")
	hostile := `</script><script>alert(1)</script><img src=x onerror=alert(2)>`
	for i, ev := range evs {
		switch ev.Kind {
		case EventRunStart:
			var rs RunStart
			if err := json.Unmarshal(ev.Data, &rs); err != nil {
				t.Fatal(err)
			}
			rs.Prompt, rs.RunID = hostile, "run-"+hostile
			evs[i].Data, _ = json.Marshal(rs)
		case EventRunEnd:
			evs[i].Data, _ = json.Marshal(RunEnd{Status: StatusFailed, Error: hostile})
		}
	}
	r, err := Render(evs)
	if err != nil {
		t.Fatal(err)
	}
	page := string(r.Files[HTMLReport])
	if n := strings.Count(page, "<script"); n != 1 {
		t.Errorf("report.html has %d <script elements, want only its own", n)
	}
	for _, bad := range []string{"<img", "onerror=alert(2)>", "src=\"http", "src='http", "href=\"http"} {
		if strings.Contains(page, bad) {
			t.Errorf("report.html contains %q", bad)
		}
	}
	for _, want := range []string{`class="status-failed"`, "&lt;script&gt;alert(1)", "default-src 'none'", "Raw settings", "cold-start-timeline"} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
}

// TestRenderWritesReportHTMLForEveryKind checks report.html is among the
// files of a baseline, a sweep and a kvscale grid, with their plots inlined.
func TestRenderWritesReportHTMLForEveryKind(t *testing.T) {
	tests := []struct{ name, fixture, chart string }{
		{name: "baseline", fixture: "baseline", chart: `id="warm-ttft-cdf"`},
		{name: "sweep", fixture: "sweep", chart: `id="sweep-pareto"`},
		{name: "failed baseline", fixture: "failed", chart: `id="cold-start-timeline"`},
		{name: "kvscale", fixture: "kvscale_events", chart: `id="kv-cache-scaling"`},
		{name: "prefix", fixture: "prefix_events", chart: `id="prefix-hit-ratio"`},
		{name: "presets", fixture: "presets_events", chart: `id="presets-pareto"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := readFixtureEventsFile(t, tt.fixture)
			r, err := Render(evs)
			if err != nil {
				t.Fatal(err)
			}
			page := string(r.Files[HTMLReport])
			if !strings.Contains(page, tt.chart) || !strings.HasPrefix(page, "<!DOCTYPE html>") {
				t.Errorf("report.html of %s lacks %s", tt.name, tt.chart)
			}
		})
	}
}

// readFixtureEventsFile reads testdata/<name>.events.jsonl, or
// testdata/<name>.jsonl.
func readFixtureEventsFile(t *testing.T, name string) []Event {
	t.Helper()
	if strings.HasSuffix(name, "_events") {
		f, err := os.Open(filepath.Join("testdata", name+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		evs, err := ReadEvents(f, name)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	return readFixtureEvents(t, name)
}

package results

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"regexp"
	"strings"
)

// HTMLReport is the self-contained HTML report written next to every
// Markdown report: the same sections, tables and plots (inline SVG, with a
// small script for hover read-outs and x-axis zoom), and the run's raw
// settings. It loads nothing from the network.
const HTMLReport = "report.html"

//go:embed assets/report.js
var reportJS string

//go:embed assets/report.css
var reportCSS string

// settingKinds are the events whose payloads are the run's raw settings.
var settingKinds = map[string]string{
	EventRunStart:   "baseline request (run_start)",
	EventSweepStart: "sweep request (sweep_start)",
	EventNodeInfo:   "gpunode (node_info)",
	EventLease:      "lease (gpunodes and agents)",
	"grid_start":    "grid request (grid_start)",
}

type htmlSetting struct {
	Name, JSON string
}

type htmlPage struct {
	Title, RunID, Status, StatusClass string
	CSS                               template.CSS
	JS                                template.JS
	Body                              template.HTML
	Settings                          []htmlSetting
}

var pageTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{{.Title}} — {{.RunID}}</title>
<link rel="icon" href="data:,">
<style>{{.CSS}}</style>
</head>
<body>
<p>ttftlab run <code>{{.RunID}}</code> <span class="{{.StatusClass}}" id="run-status">{{.Status}}</span>
· charts: hover for values, drag or wheel over a chart to zoom its x axis, double-click to reset.</p>
{{.Body}}
<h2 id="settings">Raw settings</h2>
{{range .Settings}}<details><summary>{{.Name}}</summary><pre>{{.JSON}}</pre></details>
{{else}}<p class="missing">No settings were recorded.</p>{{end}}
<script>{{.JS}}</script>
</body>
</html>
`))

// renderHTML renders report.html from a Markdown report and the files next
// to it (the SVGs it links are inlined) and the run's events (its settings).
func renderHTML(md string, files map[string][]byte, events []Event, runID, status string) []byte {
	title := "ttftlab report"
	if m := regexp.MustCompile(`(?m)^# (.+)$`).FindStringSubmatch(md); m != nil {
		title = m[1]
	}
	class := "status-other"
	switch status {
	case StatusOK:
		class = "status-ok"
	case StatusFailed:
		class = "status-failed"
	}
	if status == "" {
		status = "unknown"
	}
	page := htmlPage{Title: title, RunID: runID, Status: status, StatusClass: class,
		CSS: template.CSS(reportCSS), JS: template.JS(reportJS), Body: template.HTML(markdownToHTML(md, files))}
	for _, ev := range events {
		name, ok := settingKinds[ev.Kind]
		if !ok {
			continue
		}
		var buf bytes.Buffer
		if json.Indent(&buf, ev.Data, "", "  ") != nil {
			buf.Reset()
			buf.Write(ev.Data)
		}
		page.Settings = append(page.Settings, htmlSetting{Name: name, JSON: buf.String()})
	}
	var out bytes.Buffer
	if err := pageTmpl.Execute(&out, page); err != nil {
		// The template is fixed and its data plain strings: an error here
		// is a bug, shown in the page rather than losing the report.
		return []byte("<!DOCTYPE html><p>report.html could not be rendered: " + template.HTMLEscapeString(err.Error()) + "</p>")
	}
	return out.Bytes()
}

var (
	mdImage  = regexp.MustCompile(`^!\[([^\]]*)\]\(([^)\s]+)\)$`)
	mdCode   = regexp.MustCompile("`([^`]+)`")
	mdBold   = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	mdNumber = regexp.MustCompile(`^[-+]?[0-9][0-9.,]*( ?(ms|s|%|MiB|GiB))?( \[.*)?( ⚠)?$`)
)

// markdownToHTML converts the subset of Markdown the reports use
// (headings, paragraphs, lists, block quotes, pipe tables, images, inline
// code and bold) to HTML. Every piece of text is escaped before the inline
// markup is applied, so text from events.jsonl cannot become markup. An
// image of an SVG file in files is inlined; other images are named only.
func markdownToHTML(md string, files map[string][]byte) string {
	var b strings.Builder
	lines := strings.Split(md, "\n")
	var para []string
	flush := func() {
		if len(para) > 0 {
			b.WriteString("<p>" + inline(strings.Join(para, " ")) + "</p>\n")
			para = nil
		}
	}
	for i := 0; i < len(lines); i++ {
		ln := strings.TrimRight(lines[i], " ")
		switch {
		case ln == "":
			flush()
		case strings.HasPrefix(ln, "#"):
			flush()
			level := len(ln) - len(strings.TrimLeft(ln, "#"))
			if level > 6 {
				level = 6
			}
			text := strings.TrimSpace(ln[level:])
			fmt.Fprintf(&b, "<h%d id=\"%s\">%s</h%d>\n", level, template.HTMLEscapeString(anchor(text)), inline(text), level)
		case mdImage.MatchString(ln):
			flush()
			m := mdImage.FindStringSubmatch(ln)
			svg, ok := files[m[2]]
			if !ok || !strings.HasSuffix(m[2], ".svg") {
				fmt.Fprintf(&b, "<p class=\"missing\">%s: not drawn (no data)</p>\n", template.HTMLEscapeString(m[1]))
				continue
			}
			id := svgID(svg)
			fmt.Fprintf(&b, "<figure>%s<figcaption>%s <button class=\"reset\" data-for=\"%s\" type=\"button\">reset zoom</button></figcaption></figure>\n",
				svg, template.HTMLEscapeString(m[1]), template.HTMLEscapeString(id))
		case strings.HasPrefix(ln, "|"):
			flush()
			var rows [][]string
			for ; i < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i]), "|"); i++ {
				rows = append(rows, splitRow(strings.TrimSpace(lines[i])))
			}
			i--
			writeTable(&b, rows)
		case strings.HasPrefix(ln, "> "):
			flush()
			b.WriteString("<blockquote>" + inline(strings.TrimPrefix(ln, "> ")) + "</blockquote>\n")
		case strings.HasPrefix(ln, "- "):
			flush()
			b.WriteString("<ul>\n")
			for ; i < len(lines) && strings.HasPrefix(lines[i], "- "); i++ {
				b.WriteString("<li>" + inline(strings.TrimPrefix(lines[i], "- ")) + "</li>\n")
			}
			i--
			b.WriteString("</ul>\n")
		default:
			para = append(para, ln)
		}
	}
	flush()
	return b.String()
}

// svgID returns the id attribute of an SVG's root element.
func svgID(svg []byte) string {
	m := regexp.MustCompile(`^<svg[^>]* id="([^"]*)"`).FindSubmatch(svg)
	if m == nil {
		return ""
	}
	return string(m[1])
}

func anchor(s string) string {
	return strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// splitRow splits a pipe-table row at unescaped pipes; "\|" is a literal.
func splitRow(row string) []string {
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func writeTable(b *strings.Builder, rows [][]string) {
	if len(rows) == 0 {
		return
	}
	body := rows[1:]
	if len(body) > 0 && isRule(body[0]) {
		body = body[1:]
	}
	b.WriteString("<table>\n<thead><tr>")
	for _, c := range rows[0] {
		b.WriteString("<th>" + inline(c) + "</th>")
	}
	b.WriteString("</tr></thead>\n<tbody>\n")
	for _, r := range body {
		b.WriteString("<tr>")
		for _, c := range r {
			if mdNumber.MatchString(c) {
				b.WriteString(`<td class="num">` + inline(c) + "</td>")
			} else {
				b.WriteString("<td>" + inline(c) + "</td>")
			}
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</tbody>\n</table>\n")
}

func isRule(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, "-: ") != "" {
			return false
		}
	}
	return true
}

// inline escapes text, then applies `code` and **bold**.
func inline(s string) string {
	s = template.HTMLEscapeString(s)
	// The reports indent with the one entity they use.
	s = strings.ReplaceAll(s, "&amp;nbsp;", "&nbsp;")
	s = mdCode.ReplaceAllString(s, "<code>$1</code>")
	return mdBold.ReplaceAllString(s, "<strong>$1</strong>")
}

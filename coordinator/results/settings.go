package results

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// Setting is one row of a report's settings table: a name and its value in
// human units ("duration", "5 s").
type Setting struct {
	Name, Value string
}

// SettingsTable renders a run's load model, workload and generator
// (protojson, as recorded in the events) as a Markdown table of settings
// in human units. A part that does not decode is shown as its raw JSON on
// one line, so nothing recorded is hidden.
func SettingsTable(load, workload, generator json.RawMessage) string {
	return renderSettings(Settings(load, workload, generator))
}

// renderSettings renders rows as the reports' settings table, "" when
// there are none. Every report shows its run's settings this way.
func renderSettings(rows []Setting) string {
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| setting | value |\n|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s |\n", sanitizeOneLine(r.Name), sanitizeOneLine(r.Value))
	}
	return b.String()
}

// Settings lists the settings that SettingsTable renders, in that order;
// zero (unset) values are left out.
func Settings(load, workload, generator json.RawMessage) []Setting {
	var rows []Setting
	add := func(name, format string, a ...any) { rows = append(rows, Setting{name, fmt.Sprintf(format, a...)}) }
	if !isNull(load) {
		if m, ok := loadOf(load); ok {
			rows = append(rows, loadSettings(m)...)
		} else {
			add("load (raw)", "%s", oneLine(load))
		}
	}
	if !isNull(workload) {
		var w pb.Workload
		if err := pjsonIn.Unmarshal(workload, &w); err == nil {
			if w.GetPrompt() != "" {
				add("prompt", "%q", truncate(w.GetPrompt(), 60))
			}
			if w.GetMaxTokens() != 0 {
				add("max tokens", "%d", w.GetMaxTokens())
			}
			if w.GetIgnoreEos() {
				add("ignore EOS", "yes")
			}
			if w.GetTemperature() != 0 {
				add("temperature", "%g", w.GetTemperature())
			}
			if w.GetExtraBodyJson() != "" {
				add("extra body", "%s", w.GetExtraBodyJson())
			}
		} else {
			add("workload (raw)", "%s", oneLine(workload))
		}
	}
	if !isNull(generator) {
		var g pb.WorkloadGen
		if err := pjsonIn.Unmarshal(generator, &g); err == nil {
			rows = append(rows, genSettings(&g)...)
		} else {
			add("generator (raw)", "%s", oneLine(generator))
		}
	}
	return rows
}

func loadSettings(m *pb.LoadModel) []Setting {
	var rows []Setting
	add := func(name, format string, a ...any) { rows = append(rows, Setting{name, fmt.Sprintf(format, a...)}) }
	kind := m.GetKind()
	if kind == "" {
		kind = "closed"
	}
	add("arrival", "%s", kind)
	if m.GetConcurrency() != 0 {
		add("concurrency", "%d", m.GetConcurrency())
	}
	if m.GetRate() != 0 {
		add("rate", "%g req/s", m.GetRate())
	}
	if m.GetStartRate() != 0 {
		add("ramp from", "%g req/s", m.GetStartRate())
	}
	if m.GetBurstiness() != 0 {
		add("burstiness", "%g", m.GetBurstiness())
	}
	if m.GetDurationMs() != 0 {
		add("duration", "%s", HumanMs(float64(m.GetDurationMs())))
	}
	if m.GetRequests() != 0 {
		add("requests", "%d", m.GetRequests())
	}
	if m.GetWarmupMs() != 0 {
		add("warm-up", "%s", HumanMs(float64(m.GetWarmupMs())))
	}
	if m.GetWarmupRequests() != 0 {
		add("warm-up requests", "%d", m.GetWarmupRequests())
	}
	if m.GetMaxInFlight() != 0 {
		add("max in flight", "%d", m.GetMaxInFlight())
	}
	for _, slo := range []struct {
		name string
		ms   float64
	}{{"SLO TTFT", m.GetSloTtftMs()}, {"SLO TPOT", m.GetSloTpotMs()}, {"SLO E2E", m.GetSloE2EMs()}} {
		if slo.ms != 0 {
			add(slo.name, "≤ %s", HumanMs(slo.ms))
		}
	}
	if m.GetClientBoundP99Ms() != 0 {
		add("client-bound above", "%s dispatch-lag p99", HumanMs(m.GetClientBoundP99Ms()))
	}
	if m.GetMaxErrorRate() != 0 {
		add("max error rate", "%g %%", 100*m.GetMaxErrorRate())
	}
	if m.GetErrorWindowMs() != 0 {
		add("error window", "%s", HumanMs(float64(m.GetErrorWindowMs())))
	}
	if m.GetSeed() != 0 {
		add("seed", "%d", m.GetSeed())
	}
	return rows
}

func genSettings(g *pb.WorkloadGen) []Setting {
	var rows []Setting
	add := func(name, format string, a ...any) { rows = append(rows, Setting{name, fmt.Sprintf(format, a...)}) }
	if g.GetKind() != "" {
		add("prompts", "%s", g.GetKind())
	}
	if g.GetPath() != "" {
		add("dataset", "%s", g.GetPath())
	}
	if d := lengthDist(g.GetInputLen()); d != "" {
		add("input", "%s", d)
	}
	if d := lengthDist(g.GetOutputLen()); d != "" {
		add("output", "%s", d)
	}
	if g.GetPrefixLen() != 0 {
		add("shared prefix", "%d tokens", g.GetPrefixLen())
	}
	if g.GetNumPrefixes() != 0 {
		add("prefixes", "%d", g.GetNumPrefixes())
	}
	if g.GetUniqueFraction() != 0 {
		add("unique fraction", "%g", g.GetUniqueFraction())
	}
	if g.GetSeed() != 0 {
		add("prompt seed", "%d", g.GetSeed())
	}
	return rows
}

// lengthDist renders a token-length distribution: "512 tokens", "uniform
// 100–900 tokens", "normal, mean 512, sd 64 tokens"; "" when unset.
func lengthDist(d *pb.LengthDist) string {
	if d == nil || (d.GetMean() == 0 && d.GetMin() == 0 && d.GetMax() == 0) {
		return ""
	}
	switch d.GetKind() {
	case "uniform":
		return fmt.Sprintf("uniform %g–%g tokens", d.GetMin(), d.GetMax())
	case "normal":
		return fmt.Sprintf("normal, mean %g, sd %g tokens", d.GetMean(), d.GetStddev())
	}
	return fmt.Sprintf("%g tokens", d.GetMean())
}

// HumanMs renders milliseconds in the unit a reader expects: "250 ms",
// "1.5 s", "5 s", "2 min", "2 min 30 s".
func HumanMs(ms float64) string {
	switch {
	case ms < 1000:
		return strconv.FormatFloat(ms, 'g', -1, 64) + " ms"
	case ms < 60_000:
		return strconv.FormatFloat(ms/1000, 'g', -1, 64) + " s"
	}
	mins := int64(ms / 60_000)
	rest := (ms - float64(mins)*60_000) / 1000
	if rest == 0 {
		return fmt.Sprintf("%d min", mins)
	}
	return fmt.Sprintf("%d min %s s", mins, strconv.FormatFloat(rest, 'g', 4, 64))
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

func oneLine(b json.RawMessage) string {
	return strings.Join(strings.Fields(string(b)), " ")
}

// NumericJSON re-encodes the protojson of message type T with its 64-bit
// integers as JSON numbers instead of protojson's strings ("duration_ms":
// 5000, not "5000"), for results a reader or a script reads. JSON that does
// not decode as T is returned unchanged.
func NumericJSON[T any, PT interface {
	*T
	proto.Message
}](raw json.RawMessage) json.RawMessage {
	if isNull(raw) {
		return raw
	}
	var m T
	if err := pjsonIn.Unmarshal(raw, PT(&m)); err != nil {
		return raw
	}
	b, err := pjson.Marshal(PT(&m))
	if err != nil {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	numbers64(v, PT(&m).ProtoReflect().Descriptor())
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}

// numbers64 turns the 64-bit integer fields of obj (protojson of a message
// of descriptor md, with proto names) from strings into numbers,
// recursing into messages.
func numbers64(obj map[string]any, md protoreflect.MessageDescriptor) {
	for k, v := range obj {
		fd := md.Fields().ByName(protoreflect.Name(k))
		if fd == nil || fd.IsMap() {
			continue
		}
		conv := func(v any) any {
			switch fd.Kind() {
			case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
				protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
				if s, ok := v.(string); ok {
					return json.Number(s)
				}
			case protoreflect.MessageKind:
				if o, ok := v.(map[string]any); ok {
					numbers64(o, fd.Message())
				}
			}
			return v
		}
		if l, ok := v.([]any); ok && fd.IsList() {
			for i := range l {
				l[i] = conv(l[i])
			}
			continue
		}
		obj[k] = conv(v)
	}
}

// levelSetting names what a sweep's levels set: the concurrency of a
// closed loop, else the rate.
func levelSetting(res *SweepResults) string {
	if m, ok := loadOf(res.Load); !ok || m.GetKind() == "" || m.GetKind() == "closed" {
		return "concurrency"
	}
	return "rate"
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// This file holds the flag.Value adapters that bind flags straight into the
// library's spec structs, and the renaming of the library's field errors to
// flag names. Each adapter parses the flag's syntax only; the rules on the
// values are the library's (Spec.Validate, SweepSpec.Validate, ...).

// flagNames maps spec field names to the flags of one command, so that a
// library error such as "load.concurrency 0 is invalid" reads
// "--concurrency 0 is invalid". A field missing from the table takes its
// parent's flag ("generator.input_len.mean" that of "generator.input_len").
type flagNames map[string]string

// rename rewrites the field errors in err to name the command's flags.
func (n flagNames) rename(err error) error { return specerr.Rename(err, specerr.Table(n)) }

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// headerFlags collects repeated --header KEY:VALUE flags into a map.
type headerFlags struct{ m *map[string]string }

func (h headerFlags) String() string {
	if h.m == nil {
		return ""
	}
	return fmt.Sprint(*h.m)
}

func (h headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY:VALUE: write for example --header 'X-Tenant: a'", s)
	}
	if *h.m == nil {
		*h.m = map[string]string{}
	}
	(*h.m)[k] = strings.TrimSpace(v)
	return nil
}

// errorRateFlag reads a --max-error-rate: a fraction of failed attempts in
// [0, 1], where 1 never trips, or "off". It stores the library's encoding:
// a negative rate is off, and 0 (the library's "default") becomes the
// smallest positive rate, as the user asked for no errors.
type errorRateFlag struct{ p *float64 }

func (e errorRateFlag) String() string {
	if e.p == nil {
		return ""
	}
	switch v := *e.p; {
	case v < 0:
		return "off"
	case v == math.SmallestNonzeroFloat64:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
}

func (e errorRateFlag) Set(s string) error {
	v, err := parseMaxErrorRate(s)
	if err != nil {
		return err
	}
	*e.p = v
	return nil
}

// parseMaxErrorRate reads an error-rate flag's value (see errorRateFlag).
func parseMaxErrorRate(s string) (float64, error) {
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		return -1, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(v >= 0 && v <= 1) {
		return 0, fmt.Errorf("%q is not a fraction of failed attempts from 0 to 1: give one such as 0.5, or off (1 is off too)", s)
	}
	if v == 0 {
		return math.SmallestNonzeroFloat64, nil
	}
	if v >= 1 {
		return -1, nil
	}
	return v, nil
}

// sloFlag reads SLOs in milliseconds as vLLM bench serve's --goodput takes
// them into an agent.SLO.
type sloFlag struct{ p *agent.SLO }

func (f sloFlag) String() string {
	if f.p == nil {
		return ""
	}
	return describeSLOFlag(*f.p)
}

func (f sloFlag) Set(s string) error {
	slo, err := parseSLO(s)
	if err != nil {
		return err
	}
	*f.p = slo
	return nil
}

// parseSLO reads SLOs in milliseconds as vLLM bench serve's --goodput takes
// them: "ttft:200 tpot:50 e2el:2000" (spaces or commas; e2e or e2el).
func parseSLO(s string) (agent.SLO, error) {
	var slo agent.SLO
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, ok := strings.Cut(part, ":")
		ms, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || !(ms >= 0.001) || ms > 3.6e6 {
			return slo, fmt.Errorf("%q is not METRIC:MILLISECONDS with a number from 0.001 to 3600000; write for example \"ttft:200 tpot:50 e2e:2000\"", part)
		}
		d := time.Duration(ms * float64(time.Millisecond))
		switch strings.ToLower(k) {
		case "ttft":
			slo.TTFT = d
		case "tpot":
			slo.TPOT = d
		case "e2e", "e2el":
			slo.E2E = d
		default:
			return slo, fmt.Errorf("metric %q is unknown: use ttft, tpot or e2e", k)
		}
	}
	return slo, nil
}

func describeSLOFlag(s agent.SLO) string {
	var parts []string
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"ttft", s.TTFT}, {"tpot", s.TPOT}, {"e2e", s.E2E}} {
		if p.d > 0 {
			parts = append(parts, fmt.Sprintf("%s:%g", p.name, float64(p.d)/float64(time.Millisecond)))
		}
	}
	return strings.Join(parts, " ")
}

// extraBodyFlag reads a JSON object into a request body's extra fields.
type extraBodyFlag struct{ p *map[string]any }

func (f extraBodyFlag) String() string { return "" }

func (f extraBodyFlag) Set(s string) error {
	m, err := agent.ParseExtraBody(s)
	if err != nil {
		return err
	}
	*f.p = m
	return nil
}

// msFlag binds a duration flag into a protobuf *_ms field.
type msFlag struct{ p *int64 }

func (f msFlag) String() string {
	if f.p == nil {
		return ""
	}
	return (time.Duration(*f.p) * time.Millisecond).String()
}

func (f msFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: write it like 30s or 2m", s)
	}
	if d%time.Millisecond != 0 {
		return fmt.Errorf("%v is finer than a millisecond: give whole milliseconds, like 1500ms", d)
	}
	*f.p = d.Milliseconds()
	return nil
}

// levelsFlag reads comma-separated load levels ("1,8,32") into a slice.
type levelsFlag struct{ p *[]float64 }

func (f levelsFlag) String() string {
	if f.p == nil {
		return ""
	}
	parts := make([]string, len(*f.p))
	for i, v := range *f.p {
		parts[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

func (f levelsFlag) Set(s string) error {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil {
			return fmt.Errorf("level %q is not a number: write levels like 1,8,32", part)
		}
		out = append(out, v)
	}
	*f.p = out
	return nil
}

// int32Flag binds an integer flag into a protobuf int32 field.
type int32Flag struct{ p *int32 }

func (f int32Flag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(int(*f.p))
}

func (f int32Flag) Set(s string) error {
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("%s is out of range: give at most %d", s, math.MaxInt32)
		}
		return fmt.Errorf("%q is not a whole number", s)
	}
	*f.p = int32(v)
	return nil
}

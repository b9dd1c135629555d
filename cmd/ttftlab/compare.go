package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

const compareUsage = `
RUN_A is the reference and RUN_B the candidate; every change is B/A − 1.
A run is a sweep's run directory (its events.jsonl) or the JSON-lines file
of 'ttftlab load --out'. Levels are matched by index and value, and within
a level each agent present in both runs is compared too.

Each metric (ttft, tpot, itl and e2e at p50, p90 and p99; throughput in
requests/s and output tokens/s) gets a bootstrap confidence interval of its
change, resampled from the merged HdrHistograms, and a verdict: better or
worse when the interval excludes 0 and the change is at least --min-effect,
otherwise "no significant change". See docs/compare.md for the method.

--fail-on "ttft_p99>+10%,throughput<-5%" exits non-zero when a rule trips
on any level: the change is past the threshold and significant.

Flags:
`

// runCompare runs `ttftlab compare RUN_A RUN_B`.
func runCompare(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("compare", stderr)
	fs.Usage = func() {
		helpHeader(stderr, "compare")
		fmt.Fprint(stderr, compareUsage)
		printFlags(stderr, fs)
	}
	var opt results.CompareOptions
	failOn := fs.String("fail-on", "", "comma-separated rules METRIC>+N% or METRIC<-N%, e.g. \"ttft_p99>+10%,throughput<-5%\"; exit 1 when one trips")
	outPath := fs.String("out", "", "write the report to this file instead of stdout")
	asJSON := fs.Bool("json", false, "write JSON instead of Markdown")
	fs.IntVar(&opt.Bootstrap, "bootstrap", results.DefaultBootstrap, "bootstrap replicates per metric")
	fs.Float64Var(&opt.Confidence, "confidence", results.DefaultConfidence, "confidence level of the intervals")
	fs.Float64Var(&opt.MinEffect, "min-effect", results.DefaultMinEffect, "smallest relative change called better or worse (0.05 is 5%)")
	fs.Uint64Var(&opt.Seed, "seed", 1, "seed of the bootstrap; equal seeds give equal intervals")
	runs, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("compare: %w (see ttftlab compare -h)", err)
	}
	if len(runs) != 2 {
		return fmt.Errorf("compare: got %d run(s) %q, want two: ttftlab compare RUN_A RUN_B", len(runs), runs)
	}
	switch {
	case opt.MinEffect < 0:
		return fmt.Errorf("compare: --min-effect %g is negative: give a fraction such as 0.05, or 0 to call every significant change", opt.MinEffect)
	case opt.MinEffect == 0:
		opt.MinEffect = -1 // the user asked for none; 0 is the library's default
	}
	if err := opt.Validate(); err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	var rules []results.Rule
	if *failOn != "" {
		if rules, err = results.ParseRules(*failOn); err != nil {
			return fmt.Errorf("compare: %w", err)
		}
	}
	a, err := readCompareRun(runs[0])
	if err != nil {
		return fmt.Errorf("compare: RUN_A: %w", err)
	}
	b, err := readCompareRun(runs[1])
	if err != nil {
		return fmt.Errorf("compare: RUN_B: %w", err)
	}
	if a.Kind != b.Kind {
		return fmt.Errorf("compare: %s is a %s run and %s a %s run: compare two loads or two sweeps", a.Name, a.Kind, b.Name, b.Kind)
	}
	c := results.Compare(a, b, opt)
	if len(c.Levels) == 0 {
		return fmt.Errorf("compare: no level is in both runs (A has %s; B has %s): compare runs of the same levels",
			strings.Join(c.OnlyInA, ", "), strings.Join(c.OnlyInB, ", "))
	}
	c.ApplyRules(rules)
	var buf bytes.Buffer
	write := results.CompareMarkdown
	if *asJSON {
		write = results.CompareJSON
	}
	if err := write(&buf, c); err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	if *outPath != "" {
		if err := writeResultFile(*outPath, buf.Bytes()); err != nil {
			return fmt.Errorf("compare: --out: %w", err)
		}
		fmt.Fprintf(stderr, "wrote %s\n", *outPath)
	} else if _, err := stdout.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	if c.Failed {
		var tripped []string
		for _, r := range c.Rules {
			if r.Tripped {
				tripped = append(tripped, r.Rule+" ("+strings.Join(r.Levels, "; ")+")")
			}
		}
		return fmt.Errorf("compare: %s against %s: --fail-on tripped: %s", b.Name, a.Name, strings.Join(tripped, ", "))
	}
	return nil
}

// parseInterspersed parses flags given before, between or after the
// positional arguments and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// readCompareRun opens a run: a directory's events.jsonl, or a file.
func readCompareRun(path string) (*results.CompareRun, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: give a sweep's run directory or a `ttftlab load --out` file", err)
	}
	file := path
	if st.IsDir() {
		file = filepath.Join(path, "events.jsonl")
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("%w: a run directory holds events.jsonl", err)
	}
	defer f.Close()
	return results.ReadCompareRun(f, path)
}

// writeResultFile writes a result file readable by all (0644): results are
// meant to be shared; keys and tokens are written 0600 elsewhere.
func writeResultFile(path string, b []byte) error {
	return os.WriteFile(path, b, results.ResultFileMode)
}

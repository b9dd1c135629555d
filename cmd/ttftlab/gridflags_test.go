package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// TestGridFlagTables checks the field → flag tables of the grid commands:
// every flag a table names is one the command defines, and every field a
// spec's Validate names is in its command's table, so that no error
// reaches the user under a spec field name.
func TestGridFlagTables(t *testing.T) {
	neg := time.Duration(-1)
	tests := []struct {
		name  string
		parse func([]string) error
		table flagNames
		// bad is a spec wrong in as many fields as possible.
		bad error
	}{
		{"presets", func(a []string) error { var b bytes.Buffer; _, err := parsePresets(a, &b); return usageErr(err, &b) }, presetsFlagNames(),
			coordinator.PresetsSpec{MaxNumBatchedTokens: []int{0, 0}, MaxNumSeqs: []int{-1}, ChunkedPrefill: []bool{true, true},
				Concurrencies: []int{0, 0}, InputLen: 1, OutputLen: 0, MaxModelLen: 1, SLOTTFTMs: 900, MaxTTFTMs: 500, LevelDuration: neg,
				Warmup: neg, API: "x", RunID: "../x", MaxAgents: -1}.Validate()},
		{"prefix", func(a []string) error { var b bytes.Buffer; _, err := parsePrefix(a, &b); return usageErr(err, &b) }, prefixFlagNames(),
			coordinator.PrefixSpec{Knobs: &pb.EngineKnobs{MaxModelLen: 16}, PrefixLens: []int{-1, 64}, HitRatios: []float64{2},
				SuffixLen: 0, HitPrefixLen: 1, Concurrency: 0, Repeats: 0, OutputLen: 0, LevelDuration: neg, Warmup: neg, API: "x",
				RunID: "../x", MaxAgents: -1}.Validate()},
		{"kvscale", func(a []string) error { var b bytes.Buffer; _, err := parseKVScale(a, &b); return usageErr(err, &b) }, kvscaleFlagNames(),
			coordinator.KVScaleSpec{MaxModelLens: []int{1}, Utilizations: []float64{2}, MaxNumSeqs: -1, OutputLen: 0, MaxConcurrency: 0,
				LevelDuration: neg, Warmup: neg, API: "x", RunID: "../x", MaxAgents: -1}.Validate()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			usage := tt.parse([]string{"-h"}).Error()
			for field, flagName := range tt.table {
				if !strings.Contains(usage, "\n  "+strings.TrimPrefix(flagName, "-")+" ") && !strings.Contains(usage, "\n  "+strings.TrimPrefix(flagName, "-")+"\n") {
					t.Errorf("table maps %s to %s, which the command does not define", field, flagName)
				}
			}
			n := 0
			for _, e := range tt.bad.(interface{ Unwrap() []error }).Unwrap() {
				var fe *specerr.FieldError
				if !errors.As(e, &fe) {
					continue // a rule over several fields, such as the grid's size
				}
				n++
				for _, f := range append([]string{fe.Field}, fe.Refs...) {
					if _, ok := specerr.Table(tt.table)(f); !ok {
						t.Errorf("Validate names field %s (%v), which the table has no flag for", f, e)
					}
				}
			}
			if n < 8 {
				t.Errorf("only %d field errors from the bad spec: %v", n, tt.bad)
			}
		})
	}
}

// usageErr returns the usage a -h parse printed, as an error.
func usageErr(err error, b *bytes.Buffer) error {
	if err == nil {
		return errors.New("no error from -h")
	}
	return errors.New("\n" + b.String())
}

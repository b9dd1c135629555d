package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/internal/benchjson"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// sweepExportFlags are the vLLM-format export flags of `sweep` and `up`:
// one file per level in --save-result DIR, as `load --save-result FILE`
// writes one (docs/metrics.md, "vLLM-compatible export").
type sweepExportFlags struct {
	dir                  string
	detailed             bool
	percentiles, metrics string
	label                string
}

func (f *sweepExportFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "save-result", "", "write each level's result as vLLM bench serve's --save-result JSON into this directory, as the level ends (docs/metrics.md)")
	fs.BoolVar(&f.detailed, "save-detailed", false, "not available on a sweep: the per-request arrays stay on the agents (use ttftlab load --save-detailed)")
	fs.StringVar(&f.percentiles, "metric-percentiles", "99", "percentiles in --save-result, comma-separated, as vLLM: for example 50,90,99")
	fs.StringVar(&f.metrics, "percentile-metrics", "ttft,tpot,itl", "metrics in --save-result, comma-separated, as vLLM: ttft, tpot, itl, e2el")
	fs.StringVar(&f.label, "result-label", "", "vLLM's label key in --save-result (vLLM's flag is --label; ttftlab's --label names node labels)")
}

// exporter checks the flags, set being the flags given, and returns the
// exporter of --save-result, nil without it. A flag that would be ignored,
// or that a sweep cannot honour, is an error.
func (f *sweepExportFlags) exporter(set map[string]bool) (*sweepExport, error) {
	if f.detailed {
		return nil, errors.New("--save-detailed is not available on a sweep: the per-request arrays (ttfts, itls, input_lens, ...) stay on the agents, which send the coordinator histograms and exact sums; leave it out, or run ttftlab load --save-result FILE --save-detailed for one level")
	}
	if f.dir == "" {
		for _, name := range []string{"metric-percentiles", "percentile-metrics", "result-label"} {
			if set[name] {
				return nil, fmt.Errorf("--%s shapes the --save-result files: add --save-result DIR", name)
			}
		}
		return nil, nil
	}
	opts, err := f.options()
	if err != nil {
		return nil, err
	}
	exp, err := results.NewSweepExporter(opts)
	if err != nil {
		return nil, fmt.Errorf("--percentile-metrics: %w", err)
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, fmt.Errorf("--save-result: %w", err)
	}
	return &sweepExport{dir: f.dir, exp: exp}, nil
}

// options checks --save-result DIR (not a file) and parses the options
// that shape its files.
func (f *sweepExportFlags) options() (results.ExportOptions, error) {
	if fi, err := os.Stat(f.dir); err == nil && !fi.IsDir() {
		return results.ExportOptions{}, fmt.Errorf("--save-result %s is a file: a sweep writes one file per level, give a directory", f.dir)
	}
	opts := results.ExportOptions{Label: f.label}
	var err error
	if opts.Percentiles, err = benchjson.ParsePercentiles(f.percentiles); err != nil {
		return opts, fmt.Errorf("--metric-percentiles: %w", err)
	}
	if opts.Metrics, err = benchjson.ParseMetrics(f.metrics); err != nil {
		return opts, fmt.Errorf("--percentile-metrics: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return opts, fmt.Errorf("--percentile-metrics: %w", err)
	}
	return opts, nil
}

// sweepExport writes each level's file into dir as the level_end event
// arrives, from the events the coordinator streams.
type sweepExport struct {
	dir  string
	exp  *results.SweepExporter
	errs []error
}

// add takes one streamed event; a file it cannot write is reported on
// stderr and returned by err at the end.
func (e *sweepExport) add(ev *pb.RunEvent, stderr io.Writer) {
	if e == nil || ev == nil {
		return
	}
	f, err := e.exp.Add(results.Event{T: ev.GetUnixNano(), Kind: ev.GetKind(), Data: []byte(ev.GetJson())})
	if err == nil && f != nil {
		if err = results.SaveLevelFile(e.dir, f); err == nil {
			fmt.Fprintf(stderr, "wrote %s\n", filepath.Join(e.dir, f.Name))
		}
	}
	if err != nil {
		err = fmt.Errorf("--save-result: %w", err)
		fmt.Fprintln(stderr, err)
		e.errs = append(e.errs, err)
	}
}

// err joins the errors of the files not written.
func (e *sweepExport) err() error {
	if e == nil {
		return nil
	}
	return errors.Join(e.errs...)
}

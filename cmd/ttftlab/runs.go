package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// runJSON is one run as `ttftlab runs --json` writes it. Times are RFC
// 3339 and null when not reached yet.
type runJSON struct {
	RunID      string     `json:"run_id"`
	Experiment string     `json:"experiment"`
	GPUNodes   []string   `json:"gpunodes"`
	Agents     []string   `json:"agents"`
	State      string     `json:"state"`
	Position   *int       `json:"position"`
	Queued     *time.Time `json:"queued"`
	Start      *time.Time `json:"start"`
	End        *time.Time `json:"end"`
	Status     *string    `json:"status"`
	Error      string     `json:"error,omitempty"`
}

// runRuns lists the coordinator's runs: queued, running and done.
func runRuns(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("runs", stderr)
	var cf coordinatorFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "write the runs as a JSON array instead of a table")
	limit := fs.Int("limit", 20, "list at most this many done runs, the newest first (0: every one the coordinator keeps, at most 100); queued and running runs are always listed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *limit < 0 {
		return fmt.Errorf("--limit %d: give 0 (every done run the coordinator keeps) or a positive count", *limit)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: runs takes only flags", fs.Arg(0))
	}
	client, closer, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	resp, err := client.ListRuns(ctx, &pb.ListRunsRequest{})
	if err != nil {
		return fmt.Errorf("list runs: %w", err)
	}
	runs := newestDone(resp.GetRuns(), *limit)
	if *asJSON {
		return writeRunsJSON(stdout, runs)
	}
	return writeRunsTable(stdout, runs)
}

// newestDone orders the done runs newest first (by end, then start) and
// keeps at most limit of them (0: all), followed by the queued and running
// runs in the coordinator's order. The coordinator also lists the runs it
// read back from its results directory after a restart.
func newestDone(runs []*pb.RunInfo, limit int) []*pb.RunInfo {
	var done, active []*pb.RunInfo
	for _, r := range runs {
		if r.GetState() == "done" {
			done = append(done, r)
		} else {
			active = append(active, r)
		}
	}
	slices.SortStableFunc(done, func(a, b *pb.RunInfo) int {
		if c := cmp.Compare(b.GetEndUnixNano(), a.GetEndUnixNano()); c != 0 {
			return c
		}
		return cmp.Compare(b.GetStartUnixNano(), a.GetStartUnixNano())
	})
	if limit > 0 && len(done) > limit {
		done = done[:limit]
	}
	return append(done, active...)
}

func unixTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

func writeRunsJSON(w io.Writer, runs []*pb.RunInfo) error {
	out := make([]runJSON, 0, len(runs))
	for _, r := range runs {
		j := runJSON{RunID: r.GetRunId(), Experiment: r.GetExperiment(), GPUNodes: r.GetGpunodes(), Agents: r.GetAgents(),
			State: r.GetState(), Queued: unixTime(r.GetQueuedUnixNano()), Start: unixTime(r.GetStartUnixNano()),
			End: unixTime(r.GetEndUnixNano()), Error: r.GetError()}
		if j.GPUNodes == nil {
			j.GPUNodes = []string{}
		}
		if j.Agents == nil {
			j.Agents = []string{}
		}
		if p := int(r.GetPosition()); p > 0 {
			j.Position = &p
		}
		if s := r.GetStatus(); s != "" {
			j.Status = &s
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeRunsTable(w io.Writer, runs []*pb.RunInfo) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tEXPERIMENT\tGPUNODE\tAGENTS\tSTATE\tSTART\tEND\tSTATUS")
	orNA := func(s string) string {
		if s == "" {
			return "n/a"
		}
		return s
	}
	stamp := func(ns int64) string {
		if ns == 0 {
			return "n/a"
		}
		return time.Unix(0, ns).UTC().Format(time.RFC3339)
	}
	for _, r := range runs {
		gpus := strings.Join(r.GetGpunodes(), ",")
		if gpus == "" && r.GetState() == "queued" {
			// What it waits for: the selection it asked for.
			sel := r.GetSelection()
			switch {
			case sel.GetGpunode() != "":
				gpus = "(" + sel.GetGpunode() + ")"
			case len(sel.GetSelector()) > 0:
				gpus = "(" + membership.FormatLabels(sel.GetSelector()) + ")"
			}
		}
		state := r.GetState()
		if r.GetPosition() > 0 {
			state = fmt.Sprintf("%s #%d", state, r.GetPosition())
		}
		status := orNA(r.GetStatus())
		if r.GetError() != "" {
			status += ": " + oneLine(r.GetError(), 80)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetRunId(), orNA(r.GetExperiment()), orNA(gpus),
			orNA(strings.Join(r.GetAgents(), ",")), state, stamp(r.GetStartUnixNano()), stamp(r.GetEndUnixNano()), status)
	}
	return tw.Flush()
}

// oneLine cuts s to one line of at most n bytes, for a table cell.
func oneLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

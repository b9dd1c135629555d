package results

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/protobuf/proto"
)

// largeSweepEvents builds a one-level sweep's events.jsonl of agents ×
// intervals interval reports, each a copy of one measured report of the
// sweep fixture with its agent, sequence number and interval changed.
func largeSweepEvents(tb testing.TB, agents, intervals int) []byte {
	tb.Helper()
	b, err := os.ReadFile(sweepFixture)
	if err != nil {
		tb.Fatal(err)
	}
	evs, err := ReadEvents(bytes.NewReader(b), sweepFixture)
	if err != nil {
		tb.Fatal(err)
	}
	var head []Event
	var tmpl *pb.IntervalReport
	for _, ev := range evs {
		switch ev.Kind {
		case EventMembers, EventNodeInfo, EventTargetVersion:
			head = append(head, ev)
		case EventSweepStart:
			s, err := decodeJSON[SweepStart](ev.Data)
			if err != nil {
				tb.Fatal(err)
			}
			s.Levels = s.Levels[:1]
			ev.Data, _ = json.Marshal(s)
			head = append(head, ev)
		case EventSweepInterval:
			s, err := decodeJSON[SweepInterval](ev.Data)
			if err != nil {
				tb.Fatal(err)
			}
			if tmpl == nil && !s.Report.GetWarmup() && s.Report.GetRequestsOk() > 0 {
				tmpl = s.Report
			}
		}
	}
	if tmpl == nil {
		tb.Fatal("no measured interval in the sweep fixture")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	put := func(t int64, kind string, v any) {
		data, err := EncodeData(v)
		if err != nil {
			tb.Fatal(err)
		}
		if err := enc.Encode(Event{T: t, Kind: kind, Data: data}); err != nil {
			tb.Fatal(err)
		}
	}
	for _, ev := range head {
		if err := enc.Encode(ev); err != nil {
			tb.Fatal(err)
		}
	}
	const sec = int64(1e9)
	t0 := tmpl.GetStartUnixNano()
	names := make([]string, agents)
	for a := range names {
		names[a] = fmt.Sprintf("agent-%d", a+1)
	}
	put(t0, EventLevelStart, LevelStart{Level: 0, Value: float64(agents), Agents: names, StartNs: t0})
	for i := range intervals {
		for a := range agents {
			rep := proto.Clone(tmpl).(*pb.IntervalReport)
			rep.AgentId, rep.Seq = names[a], uint64(i)
			rep.StartUnixNano, rep.EndUnixNano = t0+int64(i)*sec, t0+int64(i+1)*sec
			rep.MeasuredStartUnixNano, rep.MeasuredEndUnixNano = t0, t0+int64(i+1)*sec
			rep.Final = i == intervals-1
			put(t0+int64(i+1)*sec, EventSweepInterval, SweepInterval{Level: 0, Report: rep})
		}
	}
	end := t0 + int64(intervals+1)*sec
	put(end, EventLevelEnd, LevelEnd{Level: 0})
	put(end, EventRunEnd, RunEnd{Status: StatusOK})
	return buf.Bytes()
}

// BenchmarkRenderDir renders a sweep's run directory of 50 agents × 100
// and × 400 intervals (docs/benchmarks.md).
func BenchmarkRenderDir(b *testing.B) {
	for _, n := range []int{100, 400} {
		b.Run(fmt.Sprintf("50x%d", n), func(b *testing.B) { benchRenderDir(b, 50, n) })
	}
}

func benchRenderDir(b *testing.B, agents, intervals int) {
	events := largeSweepEvents(b, agents, intervals)
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, EventsFile), events, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(events)))
	b.ReportAllocs()
	b.ResetTimer()
	var peak uint64
	for range b.N {
		runtime.GC()
		stop := watchHeap(&peak)
		if _, err := RenderDir(dir); err != nil {
			b.Fatal(err)
		}
		stop()
	}
	b.ReportMetric(float64(peak), "peak-heap-B")
}

// watchHeap samples the live heap (runtime/metrics) every millisecond
// until stop is called, keeping the largest value in *peak. Sampled, so
// a lower bound of the true peak.
func watchHeap(peak *uint64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			*peak = max(*peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// TestRenderDirStreamsLikeRender checks that RenderDir, which streams a
// sweep's events and keeps only the merged histograms, writes exactly what
// Render writes from the whole list of events.
func TestRenderDirStreamsLikeRender(t *testing.T) {
	inputs := map[string][]byte{"large": largeSweepEvents(t, 5, 20)}
	for _, name := range []string{sweepFixture, "testdata/degraded.events.jsonl", baselineFixture, prefixFixture, presetsFixture} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		inputs[name] = b
	}
	for name, events := range inputs {
		t.Run(filepath.Base(name), func(t *testing.T) {
			list, err := ReadEvents(bytes.NewReader(events), name)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Render(list)
			if err != nil {
				t.Fatal(err)
			}
			var js bytes.Buffer
			if err := want.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			want.Files[ResultsFile] = js.Bytes()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, EventsFile), events, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := RenderDir(dir); err != nil {
				t.Fatal(err)
			}
			for file, w := range want.Files {
				got, err := os.ReadFile(filepath.Join(dir, file))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, w) {
					t.Errorf("%s differs between RenderDir and Render (%d vs %d bytes)", file, len(got), len(w))
				}
			}
		})
	}
}

// TestScanRunKeepsNoSweepReports checks that a sweep's interval reports
// are not kept while its events are read.
func TestScanRunKeepsNoSweepReports(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, EventsFile)
	if err := os.WriteFile(path, largeSweepEvents(t, 4, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	kept, b, err := scanRun(path)
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		t.Fatal("a sweep was not streamed")
	}
	for _, ev := range kept {
		if ev.Kind == EventSweepInterval {
			t.Fatal("scanRun kept a sweep_interval event")
		}
	}
	res, err := b.finish()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Levels[0].Coverage["agent-3"].Intervals; got != 10 {
		t.Errorf("agent-3 covered %d intervals, want 10", got)
	}
}

// BenchmarkMergeCompareRun reads a 50-agent × 100-interval sweep for
// `ttftlab compare`, which merges each report into its agent's Merger and
// the level's (docs/benchmarks.md).
func BenchmarkMergeCompareRun(b *testing.B) {
	events := largeSweepEvents(b, 50, 100)
	b.SetBytes(int64(len(events)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadCompareRun(bytes.NewReader(events), "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

package results

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// The fixtures are events.jsonl files of real runs: `ttftlab up` against the
// simulated engine (2 agents, 3 warm runs, then the 3-level sweep).
const (
	baselineFixture = "testdata/baseline.events.jsonl"
	sweepFixture    = "testdata/sweep.events.jsonl"
)

// badHistograms are the encodings a hostile or broken agent could send.
func badHistograms(t testing.TB) map[string][]byte {
	t.Helper()
	real := hdr.New()
	real.Record(time.Millisecond)
	good, err := real.Encode()
	if err != nil {
		t.Fatal(err)
	}
	huge := hdrhistogram.New(hdr.Lowest, hdr.Highest, hdr.SigFigs)
	if err := huge.RecordValues(1000, 1<<50); err != nil {
		t.Fatal(err)
	}
	hugeEnc, err := huge.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		t.Fatal(err)
	}
	// A zlib bomb: a valid V2 header, then 32 MiB of zero bytes, which
	// deflate to about 32 KiB.
	var inner bytes.Buffer
	for _, v := range []any{int32(0x1c849313), int32(32 << 20), int32(0), int32(hdr.SigFigs), int64(hdr.Lowest), hdr.Highest, math.Float64bits(1)} {
		_ = binary.Write(&inner, binary.BigEndian, v)
	}
	inner.Write(make([]byte, 32<<20))
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_, _ = zw.Write(inner.Bytes())
	_ = zw.Close()
	var env bytes.Buffer
	_ = binary.Write(&env, binary.BigEndian, int32(0x1c849314))
	_ = binary.Write(&env, binary.BigEndian, int32(z.Len()))
	env.Write(z.Bytes())
	return map[string][]byte{
		"garbage":     []byte("\x00\xffnot a histogram at all"),
		"truncated":   good[:len(good)/2],
		"under 8":     []byte("SElT"),
		"huge counts": hugeEnc,
		"zlib bomb":   []byte(base64.StdEncoding.EncodeToString(env.Bytes())),
	}
}

// replaceHistograms rewrites every histogram of every interval report in an
// events.jsonl with bad, keeping everything else as recorded.
func replaceHistograms(t testing.TB, src string, bad []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var ev map[string]any
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatal(err)
		}
		data, _ := ev["data"].(map[string]any)
		rep := data
		if ev["kind"] == EventSweepInterval {
			rep, _ = data["report"].(map[string]any)
		}
		if ev["kind"] == EventInterval || ev["kind"] == EventSweepInterval {
			hs, _ := rep["histograms"].([]any)
			for _, h := range hs {
				h.(map[string]any)["v2"] = base64.StdEncoding.EncodeToString(bad)
				n++
			}
		}
		line, err = json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	if n == 0 {
		t.Fatalf("%s holds no histogram to replace", src)
	}
	return out.Bytes()
}

func TestRenderDirSurvivesGarbageHistograms(t *testing.T) {
	for _, fixture := range []string{baselineFixture, sweepFixture} {
		for name, bad := range badHistograms(t) {
			t.Run(filepath.Base(fixture)+"/"+name, func(t *testing.T) {
				dir := t.TempDir()
				if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), replaceHistograms(t, fixture, bad), 0o644); err != nil {
					t.Fatal(err)
				}
				// The bomb's cost is bounded by size caps (internal/hdr tests
				// them by bytes inflated), not asserted here by wall time.
				if _, err := RenderDir(dir); err != nil {
					t.Fatalf("RenderDir: %v; want the report rendered without the bad histograms", err)
				}
				b, err := os.ReadFile(filepath.Join(dir, "results.json"))
				if err != nil {
					t.Fatal(err)
				}
				// Read back as the types results.json is written from.
				var status string
				var warnings []string
				if fixture == sweepFixture {
					var sw SweepResults
					if err := json.Unmarshal(b, &sw); err != nil {
						t.Fatal(err)
					}
					status, warnings = sw.Status, sw.Warnings
					for _, l := range sw.Levels {
						if len(l.Metrics) != 0 || l.Requests == 0 {
							t.Errorf("level with %d requests has metrics %v; want the requests kept and no metric", l.Requests, l.Metrics)
						}
					}
				} else {
					var res Results
					if err := json.Unmarshal(b, &res); err != nil {
						t.Fatal(err)
					}
					status, warnings = res.Status, res.Warnings
					if len(res.Histograms) != 0 {
						t.Errorf("histograms %v, want none merged", res.Histograms)
					}
				}
				if status != "ok" {
					t.Errorf("status %q: the run itself was fine", status)
				}
				if len(warnings) == 0 || !strings.Contains(warnings[0], `histograms refused`) || !strings.Contains(warnings[0], `agent "agent-`) || !strings.Contains(warnings[0], "interval ") {
					t.Errorf("warnings %q, want each refused report named by agent and interval", warnings)
				}
				md := filepath.Join(dir, "first_token_latency.md")
				if fixture == sweepFixture {
					md = filepath.Join(dir, SweepReport)
				}
				if m, err := os.ReadFile(md); err != nil || !strings.Contains(string(m), "histograms refused") {
					t.Errorf("report (%v) does not carry the warning", err)
				}
			})
		}
	}
}

func TestRenderDirFixturesRenderClean(t *testing.T) {
	// The untouched fixtures render with every metric and no warning, so
	// the test above fails for the right reason.
	for _, fixture := range []string{baselineFixture, sweepFixture} {
		t.Run(filepath.Base(fixture), func(t *testing.T) {
			dir := t.TempDir()
			b, err := os.ReadFile(fixture)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := RenderDir(dir); err != nil {
				t.Fatal(err)
			}
			out, _ := os.ReadFile(filepath.Join(dir, "results.json"))
			if strings.Contains(string(out), "refused") || !strings.Contains(string(out), `"p99": `) {
				t.Errorf("results.json of a clean run warns or has no percentiles:\n%s", out)
			}
		})
	}
}

func FuzzRenderDir(f *testing.F) {
	for _, fixture := range []string{baselineFixture, sweepFixture} {
		b, err := os.ReadFile(fixture)
		if err != nil {
			f.Fatal(err)
		}
		lines := bytes.Split(b, []byte("\n"))
		// Seed with short slices of each fixture so the fuzzer mutates
		// interval, engine and sample events quickly.
		for i := 0; i+6 < len(lines); i += 40 {
			f.Add(bytes.Join(lines[i:i+6], []byte("\n")))
		}
		for name, bad := range badHistograms(f) {
			if name != "zlib bomb" {
				f.Add(replaceHistograms(f, fixture, bad)[:4096])
			}
		}
	}
	f.Fuzz(func(t *testing.T, events []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), events, 0o644); err != nil {
			t.Fatal(err)
		}
		// Any error is fine; a panic (caught or not) is not.
		_, err := RenderDir(dir)
		if err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatalf("RenderDir panicked: %v", err)
		}
	})
}

// TestResultFilesAreReadableByAll checks that RenderDir writes results.json
// and the report 0644, not os.CreateTemp's 0600.
func TestResultFilesAreReadableByAll(t *testing.T) {
	fixture, err := os.ReadFile("testdata/sweep.events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), fixture, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderDir(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			st, err := os.Stat(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if e.IsDir() {
				return
			}
			if got := st.Mode().Perm(); got != ResultFileMode {
				t.Errorf("%s is %v, want %v", e.Name(), got, os.FileMode(ResultFileMode))
			}
		})
	}
}

package results

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

func TestHumanMs(t *testing.T) {
	tests := []struct {
		name string
		ms   float64
		want string
	}{
		{name: "milliseconds", ms: 250, want: "250 ms"},
		{name: "fraction of a ms", ms: 0.5, want: "0.5 ms"},
		{name: "seconds", ms: 5000, want: "5 s"},
		{name: "fractional seconds", ms: 1500, want: "1.5 s"},
		{name: "minutes", ms: 180_000, want: "3 min"},
		{name: "minutes and seconds", ms: 150_000, want: "2 min 30 s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HumanMs(tt.ms); got != tt.want {
				t.Errorf("HumanMs(%g) = %q, want %q", tt.ms, got, tt.want)
			}
		})
	}
}

func TestSettings(t *testing.T) {
	tests := []struct {
		name            string
		load, work, gen string
		want            []Setting
	}{
		{name: "closed loop with warm-up and synthetic prompts",
			load: `{"kind":"closed","duration_ms":"5000","warmup_ms":"1000","seed":"1"}`,
			work: `{"max_tokens":128,"ignore_eos":true}`,
			gen:  `{"kind":"synthetic","input_len":{"kind":"fixed","mean":512},"output_len":{"kind":"uniform","min":10,"max":200}}`,
			want: []Setting{{"arrival", "closed"}, {"duration", "5 s"}, {"warm-up", "1 s"}, {"seed", "1"},
				{"max tokens", "128"}, {"ignore EOS", "yes"}, {"prompts", "synthetic"}, {"input", "512 tokens"}, {"output", "uniform 10–200 tokens"}}},
		{name: "open loop with SLOs; numbers as JSON numbers",
			load: `{"kind":"poisson","rate":2.5,"requests":100,"max_in_flight":8,"slo_ttft_ms":200,"max_error_rate":0.5,"error_window_ms":5000}`,
			want: []Setting{{"arrival", "poisson"}, {"rate", "2.5 req/s"}, {"requests", "100"}, {"max in flight", "8"},
				{"SLO TTFT", "≤ 200 ms"}, {"max error rate", "50 %"}, {"error window", "5 s"}}},
		{name: "undecodable parts shown raw",
			load: `{"kind": 7}`, work: `[1,
 2]`,
			want: []Setting{{"load (raw)", `{"kind": 7}`}, {"workload (raw)", "[1, 2]"}}},
		{name: "nothing recorded", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := func(s string) json.RawMessage {
				if s == "" {
					return nil
				}
				return json.RawMessage(s)
			}
			got := Settings(raw(tt.load), raw(tt.work), raw(tt.gen))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSettingsTableEscapes(t *testing.T) {
	got := SettingsTable(nil, json.RawMessage(`{"prompt":"a | b\nc"}`), nil)
	if !strings.Contains(got, `| prompt | "a \| b\nc" |`) {
		t.Errorf("table does not escape the cell:\n%s", got)
	}
}

func TestNumericJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "int64 strings become numbers", in: `{"kind":"closed","duration_ms":"5000","seed":"18446744073709551615"}`,
			want: `{"duration_ms":5000,"kind":"closed","seed":18446744073709551615}`},
		{name: "numbers stay numbers", in: `{"duration_ms":5000}`, want: `{"duration_ms":5000}`},
		{name: "not a load model: unchanged", in: `{"duration_ms":true}`, want: `{"duration_ms":true}`},
		{name: "null", in: `null`, want: `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(NumericJSON[pb.LoadModel](json.RawMessage(tt.in))); got != tt.want {
				t.Errorf("NumericJSON(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
	gen := `{"kind":"synthetic","input_len":{"kind":"fixed","mean":512},"seed":"7","suffix_seed":"9"}`
	if got, want := string(NumericJSON[pb.WorkloadGen](json.RawMessage(gen))), `{"input_len":{"kind":"fixed","mean":512},"kind":"synthetic","seed":7,"suffix_seed":9}`; got != want {
		t.Errorf("generator: got %s, want %s", got, want)
	}
}

// FuzzNumericJSON feeds recorded settings (read back from events.jsonl, so
// untrusted) to NumericJSON and Settings: no panic, and the output is JSON.
func FuzzNumericJSON(f *testing.F) {
	for _, s := range []string{`{"kind":"closed","duration_ms":"5000"}`, `null`, `{"seed":"-1"}`, `[`, `{"warmup_ms":1e30}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := NumericJSON[pb.LoadModel](json.RawMessage(s))
		if json.Valid([]byte(s)) && !json.Valid(out) {
			t.Fatalf("NumericJSON(%q) = %q, not JSON", s, out)
		}
		_ = Settings(json.RawMessage(s), json.RawMessage(s), json.RawMessage(s))
	})
}

package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
)

func TestParseHFConfig(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    Model
		wantErr []string
	}{
		{
			name: "qwen2.5-1.5b",
			json: `{"_name_or_path": "Qwen/Qwen2.5-1.5B-Instruct", "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
			  "num_hidden_layers": 28, "hidden_size": 1536, "num_attention_heads": 12, "num_key_value_heads": 2,
			  "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": true, "max_position_embeddings": 32768,
			  "torch_dtype": "bfloat16", "sliding_window": 32768, "use_sliding_window": false}`,
			want: func() Model {
				m, _ := LookupModel("Qwen/Qwen2.5-1.5B-Instruct")
				m.ModelType, m.DType = "qwen2", "bfloat16"
				return m
			}(),
		},
		{
			name: "phi-3 sliding window",
			json: `{"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "num_hidden_layers": 32, "hidden_size": 3072,
			  "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 8192, "vocab_size": 32064,
			  "tie_word_embeddings": false, "max_position_embeddings": 4096, "torch_dtype": "bfloat16", "sliding_window": 2047}`,
			want: Model{kvcalc.Config{Architecture: "Phi3ForCausalLM", ModelType: "phi3", Layers: 32, Hidden: 3072, Heads: 32, KVHeads: 32, HeadDim: 96, FFN: 8192, Vocab: 32064, MaxPositionEmbeddings: 4096, SlidingWindow: 2047, DType: "bfloat16"}},
		},
		{
			name: "llava text_config, float32, default kv heads",
			json: `{"architectures": ["LlavaNextForConditionalGeneration"], "torch_dtype": "float32",
			  "text_config": {"model_type": "mistral", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
			  "intermediate_size": 14336, "vocab_size": 32064, "max_position_embeddings": 32768}}`,
			want: Model{kvcalc.Config{Architecture: "LlavaNextForConditionalGeneration", ModelType: "mistral", Layers: 32, Hidden: 4096, Heads: 32, KVHeads: 32, HeadDim: 128, FFN: 14336, Vocab: 32064, MaxPositionEmbeddings: 32768, DType: "float32"}},
		},
		{
			name:    "missing fields",
			json:    `{"hidden_size": 1024, "num_attention_heads": 16}`,
			wantErr: []string{"missing or invalid num_hidden_layers, intermediate_size, vocab_size, max_position_embeddings"},
		},
		{name: "bad dtype", json: `{"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 512, "torch_dtype": "int8"}`, wantErr: []string{`torch_dtype "int8"`}},
		{name: "bad kv heads", json: `{"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 512}`, wantErr: []string{"num_key_value_heads 3"}},
		{name: "not json", json: `{`, wantErr: []string{"not a JSON config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHFConfig([]byte(tt.json))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("parse = %+v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name == "" {
				got.Name = tt.want.Name
			}
			if got != tt.want {
				t.Errorf("parse =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestLoadHFConfigNamesAndErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my-model")
	os.MkdirAll(dir, 0o755) //nolint:errcheck // checked by the read below
	if _, err := LoadHFConfig(dir); err == nil || !strings.Contains(err.Error(), "--model-config") {
		t.Errorf("missing file: %v, want an error naming --model-config", err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"num_hidden_layers": 1}`), 0o644) //nolint:errcheck // checked below
	_, err := LoadHFConfig(dir)
	if err == nil || !strings.Contains(err.Error(), "config.json: missing or invalid hidden_size") {
		t.Errorf("error %v, want it to name the file and hidden_size", err)
	}
}

func TestCalibration(t *testing.T) {
	doc := `{
	  "perf": {"eta_mfu": 0.6, "t_step_cpu": "0.9ms", "tau_layer_eager": "200us", "max_capture_size": 256},
	  "startup": {"bootstrap": "3s", "disk_read_bps": 2e9},
	  "memory": {"non_torch_gib": 0.3},
	  "gpu": {"total_gib": 40, "bandwidth_bps": 1e12},
	  "first_request_delay": "1s"
	}`
	cal, err := ParseCalibration([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	cal.Apply(&c)
	if c.Perf.EtaMFU != 0.6 || c.Perf.TStepCPU != 900*time.Microsecond || c.Perf.TauLayerEager != 200*time.Microsecond ||
		c.Perf.MaxCaptureSize != 256 || c.Perf.TAPI != DefaultPerfParams().TAPI {
		t.Errorf("perf = %+v", c.Perf)
	}
	if c.Startup.Bootstrap != 3*time.Second || c.Startup.DiskReadBps != 2e9 || c.Startup.CompileCold != DefaultConfig().Startup.CompileCold {
		t.Errorf("startup = %+v", c.Startup)
	}
	if c.Memory.NonTorchGiB != 0.3 || c.FirstRequestDelay != time.Second {
		t.Errorf("memory %+v, first-request delay %v", c.Memory, c.FirstRequestDelay)
	}
	r, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.gpu.TotalGiB != 40 || r.gpu.BandwidthBps != 1e12 || r.gpu.PeakFLOPS != 989e12 {
		t.Errorf("gpu = %+v", r.gpu)
	}
	if r.MaxNumBatchedTokens != 2048 {
		t.Errorf("a 40 GiB GPU gets max_num_batched_tokens %d, want 2048", r.MaxNumBatchedTokens)
	}

	for _, tt := range []struct{ doc, want string }{
		{`{"perf": {"eta_mfu": 0.5, "tau": "1ms"}}`, `unknown field "tau"`},
		{`{"gpus": {}}`, `unknown field "gpus"`},
		{`{"perf": {"t_api": 8}}`, `want a duration string`},
		{`{"perf": {"t_api": "-1ms"}}`, `must not be negative`},
		{`{"gpu": {"peak_flops": 0}}`, `gpu.peak_flops 0 must be positive`},
		{`{} {}`, `trailing data`},
	} {
		if _, err := ParseCalibration([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseCalibration(%s) = %v, want an error containing %q", tt.doc, err, tt.want)
		}
	}
}

package sim

import (
	"strings"
	"testing"
)

func TestModelParams(t *testing.T) {
	tests := []struct {
		model      string
		wantParams int64
		wantKVTok  int64
	}{
		// Parameter totals from the HF model cards / safetensors index.
		{"Qwen/Qwen2.5-1.5B-Instruct", 1_543_714_304, 28 * 1024},
		{"microsoft/Phi-3-mini-4k-instruct", 3_821_079_552, 384 * 1024},
		{"meta-llama/Llama-3.2-1B-Instruct", 1_235_814_400, 32 * 1024},
		{"meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248, 128 * 1024},
		{"Qwen/Qwen2.5-7B-Instruct", 7_615_616_512, 56 * 1024},
		{"Qwen/Qwen2.5-14B-Instruct", 14_770_033_664, 192 * 1024},
		{"Qwen/Qwen2.5-32B-Instruct", 32_763_876_352, 256 * 1024},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			m, err := LookupModel(tt.model)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.TotalParams(); got != tt.wantParams {
				t.Errorf("TotalParams() = %d, want %d", got, tt.wantParams)
			}
			if got := m.KVBytesPerToken(); got != tt.wantKVTok {
				t.Errorf("KVBytesPerToken() = %d, want %d", got, tt.wantKVTok)
			}
		})
	}
}

func TestLookupModel(t *testing.T) {
	tests := []struct {
		name, want string
	}{
		{"Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"},
		{"qwen/qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct"},
		{"Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"},
		{"/models/Phi-3-mini-4k-instruct/", "microsoft/Phi-3-mini-4k-instruct"},
		{"llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := LookupModel(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if m.Name != tt.want {
				t.Errorf("LookupModel(%q) = %s, want %s", tt.name, m.Name, tt.want)
			}
		})
	}
}

func TestLookupGPU(t *testing.T) {
	for name, want := range map[string]string{"H200": "h200", "h100": "h100-sxm", "A100": "a100-80g", "A100-40GB": "a100-40g", "l40s": "l40s", "L4": "l4"} {
		g, err := LookupGPU(name)
		if err != nil || g.Name != want {
			t.Errorf("LookupGPU(%q) = %q, %v; want %q", name, g.Name, err, want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string // substrings; nil means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"unknown model", func(c *Config) { c.Model = "gpt-5" }, []string{"--model", `"gpt-5"`, "Qwen/Qwen2.5-1.5B-Instruct"}},
		{"unknown gpu", func(c *Config) { c.GPU = "tpu" }, []string{"--gpu", `"tpu"`, "h200", "a100-80g"}},
		{"util zero", func(c *Config) { c.GPUMemoryUtilization = 0 }, []string{"--gpu-memory-utilization", "(0, 1]"}},
		{"util above one", func(c *Config) { c.GPUMemoryUtilization = 1.5 }, []string{"--gpu-memory-utilization", "1.5"}},
		{"negative max-model-len", func(c *Config) { c.MaxModelLen = -1 }, []string{"--max-model-len", "-1"}},
		{"max-model-len above model", func(c *Config) { c.MaxModelLen = 40000 }, []string{"--max-model-len", "max_position_embeddings=32768"}},
		{"negative max-num-seqs", func(c *Config) { c.MaxNumSeqs = -2 }, []string{"--max-num-seqs", "-2"}},
		{"negative batched tokens", func(c *Config) { c.MaxNumBatchedTokens = -2 }, []string{"--max-num-batched-tokens"}},
		{"seqs above tokens", func(c *Config) { c.MaxNumSeqs = 512; c.MaxNumBatchedTokens = 256 }, []string{"--max-num-batched-tokens", "max_num_seqs (512)"}},
		{"bad port", func(c *Config) { c.Port = 70000 }, []string{"--port", "70000"}},
		{"negative scale", func(c *Config) { c.StartupScale = -1 }, []string{"--startup-scale"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func TestBatchDefaults(t *testing.T) {
	tests := []struct {
		gpu              string
		wantTok, wantSeq int
	}{
		{"h200", 8192, 1024},
		{"h100", 8192, 1024},
		{"a100-80g", 2048, 256},
		{"l40s", 2048, 256},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		c.GPU = tt.gpu
		r, err := c.resolve()
		if err != nil {
			t.Fatal(err)
		}
		if r.MaxNumBatchedTokens != tt.wantTok || r.MaxNumSeqs != tt.wantSeq {
			t.Errorf("%s: defaults %d/%d, want %d/%d", tt.gpu, r.MaxNumBatchedTokens, r.MaxNumSeqs, tt.wantTok, tt.wantSeq)
		}
	}
}

package kvcalc

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseRealConfigs reads real config.json files (testdata) and checks
// the fields that size the KV cache, and kv bytes per token = 2 × layers ×
// KV heads × head dim × the bytes of the dtype vLLM runs the model in.
func TestParseRealConfigs(t *testing.T) {
	tests := []struct {
		file                          string
		layers, kvHeads, headDim, dtb int
		window, fullLayers            int
		wantBytesPerToken             int64
	}{
		{"qwen2.5-1.5b-instruct.json", 28, 2, 128, 2, 0, 0, 28 << 10},
		{"phi-3-mini-4k-instruct.json", 32, 32, 96, 2, 2047, 0, 384 << 10},
		{"llama-3.1-8b.json", 32, 8, 128, 2, 0, 0, 128 << 10},
		// head_dim 128 although hidden_size / heads = 64.
		{"qwen3-0.6b.json", 28, 8, 128, 2, 0, 0, 112 << 10},
		// head_dim 256 (= 2304/8 would be 288); a float32 checkpoint runs in
		// bfloat16; every other layer slides.
		{"gemma-2-2b-it.json", 26, 4, 256, 2, 4096, 13, 104 << 10},
		// The language model sits under text_config.
		{"llava-v1.6-mistral-7b.json", 32, 8, 128, 2, 0, 0, 128 << 10},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".json"), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseConfig(b)
			if err != nil {
				t.Fatal(err)
			}
			if c.Layers != tt.layers || c.KVHeads != tt.kvHeads || c.HeadDim != tt.headDim || c.SlidingWindow != tt.window || c.FullLayers != tt.fullLayers {
				t.Errorf("layers %d, kv heads %d, head dim %d, window %d, full layers %d; want %d, %d, %d, %d, %d",
					c.Layers, c.KVHeads, c.HeadDim, c.SlidingWindow, c.FullLayers, tt.layers, tt.kvHeads, tt.headDim, tt.window, tt.fullLayers)
			}
			l, err := LayoutOf(c, "auto", 1, 16)
			if err != nil {
				t.Fatal(err)
			}
			want := int64(2 * tt.layers * tt.kvHeads * tt.headDim * tt.dtb)
			if got := l.BytesPerToken(); got != want || got != tt.wantBytesPerToken {
				t.Errorf("kv bytes per token = %d, want 2×%d×%d×%d×%d = %d", got, tt.layers, tt.kvHeads, tt.headDim, tt.dtb, want)
			}
			if l8, err := LayoutOf(c, "fp8", 1, 16); err != nil || l8.BytesPerToken()*2 != want {
				t.Errorf("fp8 bytes per token = %d, %v; want %d", l8.BytesPerToken(), err, want/2)
			}
		})
	}
}

func TestParseConfigRejects(t *testing.T) {
	base := map[string]any{
		"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
		"vocab_size": 100, "max_position_embeddings": 512,
	}
	with := func(kv ...any) string {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	tests := []struct {
		name string
		json string
		want string
	}{
		{"missing fields", `{"hidden_size": 1024, "num_attention_heads": 16}`, "missing or invalid num_hidden_layers, intermediate_size, vocab_size, max_position_embeddings"},
		{"missing text_config field", `{"text_config": {"hidden_size": 8}}`, "missing or invalid num_hidden_layers"},
		{"negative layers", with("num_hidden_layers", -3), "num_hidden_layers (-3: must be 1..4096)"},
		{"huge heads", with("num_attention_heads", 1<<40), "num_attention_heads (1099511627776: must be 1..4096)"},
		{"float layers", with("num_hidden_layers", 2.5), "not a JSON config"},
		{"string layers", with("num_hidden_layers", "2"), "not a JSON config"},
		{"overflowing layers", strings.Replace(with(), `"num_hidden_layers":2`, `"num_hidden_layers":99999999999999999999999`, 1), "not a JSON config"},
		{"zero head_dim", with("head_dim", 0), "head_dim 0: must be 1..16384"},
		{"bad kv heads", with("num_key_value_heads", 3), "num_key_value_heads 3 must be positive and divide num_attention_heads 4"},
		{"indivisible hidden", with("hidden_size", 66), "add head_dim to the config"},
		{"bad dtype", with("torch_dtype", "int8"), `torch_dtype "int8": accepted`},
		{"negative window", with("sliding_window", -1), "sliding_window -1"},
		{"layer_types length", with("layer_types", []string{"full_attention"}), "layer_types has 1 entries, num_hidden_layers is 2"},
		{"layer_types value", with("layer_types", []string{"full_attention", "mamba"}), `layer_types[1] "mamba"`},
		{"trailing data", with() + "{}", "trailing data"},
		{"not json", `{`, "not a JSON config"},
		{"array", `[1, 2]`, "not a JSON config"},
		{"too large", `{"x": "` + strings.Repeat("a", MaxConfigBytes) + `"}`, "over the 1048576-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatalf("ParseConfig = %+v, want an error containing %q", c, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err, tt.want)
			}
		})
	}
}

func TestLayoutOfRejects(t *testing.T) {
	c := Config{Layers: 32, Hidden: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 1, Vocab: 1, MaxPositionEmbeddings: 4096}
	tests := []struct {
		name      string
		dtype     string
		tp, block int
		want      string
	}{
		{"tp zero", "auto", 0, 16, "--tensor-parallel-size 0: must be 1..1024"},
		{"tp not dividing heads", "auto", 3, 16, "--tensor-parallel-size 3: num_attention_heads 32"},
		{"block zero", "auto", 1, 0, "--block-size 0: must be 1..4096"},
		{"bad kv dtype", "int4", 1, 16, `--kv-cache-dtype "int4"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LayoutOf(c, tt.dtype, tt.tp, tt.block)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LayoutOf error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	l, err := LayoutOf(c, "auto", 16, 16)
	if err != nil || l.KVHeads != 1 {
		t.Errorf("tp 16 with 8 KV heads: %d heads per rank, %v; want 1 (replicated)", l.KVHeads, err)
	}
}

// FuzzParseConfig feeds arbitrary bytes to ParseConfig: it must never
// panic, and whatever it accepts must give a valid layout whose bytes per
// token are 2 × layers × KV heads × head dim × 2.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"text_config": {"num_hidden_layers": 1}}`))
	f.Add([]byte(`{"num_hidden_layers": 1, "hidden_size": 1, "num_attention_heads": 1, "intermediate_size": 1, "vocab_size": 1, "max_position_embeddings": 1, "layer_types": ["sliding_attention"], "sliding_window": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		l, err := LayoutOf(c, "auto", 1, 16)
		if err != nil {
			t.Fatalf("accepted config %+v gives no layout: %v", c, err)
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("accepted config %+v: %v", c, err)
		}
		if got, want := l.BytesPerToken(), 2*int64(c.Layers)*int64(c.KVHeads)*int64(c.HeadDim)*2; got != want || got <= 0 {
			t.Fatalf("bytes per token = %d, want %d", got, want)
		}
		if c.FullLayers < 0 || c.FullLayers >= c.Layers && c.SlidingWindow > 0 {
			t.Fatalf("full layers %d of %d with window %d", c.FullLayers, c.Layers, c.SlidingWindow)
		}
		if n := l.BlocksPerRequest(c.MaxPositionEmbeddings, 8192); n <= 0 {
			t.Fatalf("blocks per request = %d", n)
		}
	})
}

// TestParseConfigRandomProperty builds random valid configs and checks that
// the parsed KV bytes per token follow the formula, with and without an
// explicit head_dim and with the model nested under text_config.
func TestParseConfigRandomProperty(t *testing.T) {
	for i := range 500 {
		heads := 1 << (i % 7)
		kvHeads := heads >> (i % 3)
		if kvHeads == 0 {
			kvHeads = 1
		}
		layers := 1 + (i*37)%96
		m := map[string]any{
			"num_hidden_layers": layers, "hidden_size": heads * 64, "num_attention_heads": heads,
			"num_key_value_heads": kvHeads, "intermediate_size": 1 + i, "vocab_size": 1000 + i,
			"max_position_embeddings": 4096, "torch_dtype": []string{"bfloat16", "float16", "float32"}[i%3],
		}
		headDim := 64
		if i%2 == 1 {
			headDim = 16 * (1 + i%20)
			m["head_dim"] = headDim
		}
		var doc any = m
		if i%5 == 0 {
			doc = map[string]any{"architectures": []string{"X"}, "text_config": m}
		}
		b, _ := json.Marshal(doc)
		c, err := ParseConfig(b)
		if err != nil {
			t.Fatalf("case %d %s: %v", i, b, err)
		}
		l, err := LayoutOf(c, "auto", 1, 16)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := l.BytesPerToken(), int64(2*layers*kvHeads*headDim*2); got != want {
			t.Fatalf("case %d %s: bytes per token %d, want %d", i, b, got, want)
		}
	}
}

package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// hfConfig is the part of a Hugging Face config.json the simulator reads.
// Pointers distinguish a missing field from a zero one.
type hfConfig struct {
	NameOrPath            string          `json:"_name_or_path"`
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	Layers                *int            `json:"num_hidden_layers"`
	Hidden                *int            `json:"hidden_size"`
	Heads                 *int            `json:"num_attention_heads"`
	KVHeads               *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	FFN                   *int            `json:"intermediate_size"`
	Vocab                 *int            `json:"vocab_size"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	TorchDType            string          `json:"torch_dtype"`
	DType                 string          `json:"dtype"` // transformers ≥ 4.56 name
	SlidingWindow         *int            `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	AttentionBias         *bool           `json:"attention_bias"`
	TextConfig            json.RawMessage `json:"text_config"`
}

// LoadHFConfig reads a Hugging Face config.json (path may also be the
// directory holding it) into a Model. Multimodal configs that nest the
// language model under "text_config" (LLaVA) are read from there; only the
// language model is simulated. The required fields are num_hidden_layers,
// hidden_size, num_attention_heads, intermediate_size, vocab_size and
// max_position_embeddings; num_key_value_heads defaults to
// num_attention_heads, head_dim to hidden_size/num_attention_heads,
// tie_word_embeddings to false and torch_dtype to bfloat16. The model is
// named after _name_or_path, or else the directory holding the file.
func LoadHFConfig(path string) (Model, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Model{}, fmt.Errorf("--model-config: %w", err)
	}
	m, err := parseHFConfig(b)
	if err != nil {
		return Model{}, fmt.Errorf("--model-config %s: %w", path, err)
	}
	if m.Name == "" {
		abs, _ := filepath.Abs(path)
		m.Name = filepath.Base(filepath.Dir(abs))
	}
	return m, nil
}

func parseHFConfig(b []byte) (Model, error) {
	var top hfConfig
	if err := json.Unmarshal(b, &top); err != nil {
		return Model{}, fmt.Errorf("not a JSON config: %w", err)
	}
	c := top
	if len(top.TextConfig) > 0 && string(top.TextConfig) != "null" && top.Layers == nil {
		var text hfConfig
		if err := json.Unmarshal(top.TextConfig, &text); err != nil {
			return Model{}, fmt.Errorf("text_config: %w", err)
		}
		c = text
		if c.TorchDType == "" && c.DType == "" {
			c.TorchDType, c.DType = top.TorchDType, top.DType
		}
		if c.TieWordEmbeddings == nil {
			c.TieWordEmbeddings = top.TieWordEmbeddings
		}
		c.NameOrPath, c.Architectures = top.NameOrPath, top.Architectures
	}
	var missing []string
	need := func(p *int, name string) int {
		if p == nil {
			missing = append(missing, name)
			return 0
		}
		if *p <= 0 {
			missing = append(missing, name+" (must be positive)")
		}
		return *p
	}
	m := Model{
		Name:                  c.NameOrPath,
		Layers:                need(c.Layers, "num_hidden_layers"),
		Hidden:                need(c.Hidden, "hidden_size"),
		Heads:                 need(c.Heads, "num_attention_heads"),
		FFN:                   need(c.FFN, "intermediate_size"),
		Vocab:                 need(c.Vocab, "vocab_size"),
		MaxPositionEmbeddings: need(c.MaxPositionEmbeddings, "max_position_embeddings"),
	}
	if len(missing) > 0 {
		return Model{}, fmt.Errorf("missing or invalid %s (required: num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, vocab_size, max_position_embeddings)", strings.Join(missing, ", "))
	}
	if len(c.Architectures) > 0 {
		m.Architecture = c.Architectures[0]
	}
	m.KVHeads = m.Heads
	if c.KVHeads != nil {
		m.KVHeads = *c.KVHeads
	}
	if m.KVHeads <= 0 || m.Heads%m.KVHeads != 0 {
		return Model{}, fmt.Errorf("num_key_value_heads %d must be positive and divide num_attention_heads %d", m.KVHeads, m.Heads)
	}
	if c.HeadDim != nil && *c.HeadDim > 0 {
		m.HeadDim = *c.HeadDim
	} else {
		if m.Hidden%m.Heads != 0 {
			return Model{}, fmt.Errorf("no head_dim, and hidden_size %d is not a multiple of num_attention_heads %d", m.Hidden, m.Heads)
		}
		m.HeadDim = m.Hidden / m.Heads
	}
	m.TiedEmbeddings = c.TieWordEmbeddings != nil && *c.TieWordEmbeddings
	m.QKVBias = c.ModelType == "qwen2" || (c.AttentionBias != nil && *c.AttentionBias)
	dt := c.TorchDType
	if dt == "" {
		dt = c.DType
	}
	switch strings.TrimPrefix(dt, "torch.") {
	case "", "bfloat16", "float16", "half":
		m.DTypeBytes = 2
	case "float32", "float":
		m.DTypeBytes = 4
	default:
		return Model{}, fmt.Errorf("torch_dtype %q: accepted: bfloat16, float16, float32", dt)
	}
	if c.SlidingWindow != nil && *c.SlidingWindow > 0 && (c.UseSlidingWindow == nil || *c.UseSlidingWindow) &&
		*c.SlidingWindow < m.MaxPositionEmbeddings {
		m.SlidingWindow = *c.SlidingWindow
	}
	return m, nil
}

// errNoModel is returned when neither a built-in model nor a config is named.
var errNoModel = errors.New("--model: must not be empty without --model-config")

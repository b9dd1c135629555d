// Package kvcalc computes vLLM's KV-cache capacity: the bytes one token's
// K and V take, the blocks a memory budget holds, and the maximum
// concurrency vLLM logs at startup. It is pure arithmetic; its only input
// parsing is of a Hugging Face config.json given as bytes, which it treats
// as untrusted. The simulated engine (internal/sim) plans its KV cache with
// this package, so the simulator and `ttftlab kv` cannot disagree.
package kvcalc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// MaxConfigBytes bounds the config.json ParseConfig accepts. Real configs
// are a few KiB; the largest (long label maps) stay well under 1 MiB.
const MaxConfigBytes = 1 << 20

// Field limits: generous bounds on real transformer configs that keep every
// product in this package far from int64 overflow.
const (
	maxLayers    = 1 << 12
	maxHeads     = 1 << 12
	maxHidden    = 1 << 20
	maxHeadDim   = 1 << 14
	maxFFN       = 1 << 22
	maxVocab     = 1 << 24
	maxPositions = 1 << 30
)

// Config is the part of a Hugging Face config.json that sizes a model's
// weights and KV cache. For a multimodal config it describes the language
// model ("text_config").
type Config struct {
	// Name is _name_or_path (may be empty).
	Name string
	// Architecture is architectures[0] (may be empty).
	Architecture string
	// ModelType is the language model's model_type, e.g. "qwen2".
	ModelType string
	// Layers is num_hidden_layers.
	Layers int
	// Hidden is hidden_size.
	Hidden int
	// Heads is num_attention_heads.
	Heads int
	// KVHeads is num_key_value_heads (num_attention_heads when absent).
	KVHeads int
	// HeadDim is head_dim, or hidden_size / num_attention_heads when absent.
	HeadDim int
	// FFN is intermediate_size.
	FFN int
	// Vocab is vocab_size.
	Vocab int
	// TiedEmbeddings is tie_word_embeddings.
	TiedEmbeddings bool
	// QKVBias reports whether the q, k and v projections carry a bias.
	QKVBias bool
	// MaxPositionEmbeddings is max_position_embeddings, vLLM's default
	// max_model_len.
	MaxPositionEmbeddings int
	// SlidingWindow is the effective sliding window in tokens (0: none).
	SlidingWindow int
	// FullLayers is how many layers attend to the full context although
	// SlidingWindow is set (interleaved models such as Gemma-2); 0 means
	// every layer uses the window.
	FullLayers int
	// DType is the checkpoint dtype: "bfloat16", "float16" or "float32"
	// ("" when the config names none).
	DType string
	// ExtraParams are weights outside the language model (a vision tower
	// and projector). config.json does not give them; built-in models do.
	ExtraParams int64
}

// hfConfig mirrors config.json; pointers tell a missing field from a zero.
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
	SlidingWindowPattern  *int            `json:"sliding_window_pattern"`
	LayerTypes            []string        `json:"layer_types"`
	AttentionBias         *bool           `json:"attention_bias"`
	TextConfig            json.RawMessage `json:"text_config"`
}

// requiredFields lists, in order, the fields ParseConfig insists on.
const requiredFields = "num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, vocab_size, max_position_embeddings"

// ParseConfig reads a Hugging Face config.json. Multimodal configs that nest
// the language model under "text_config" are read from there, inheriting
// the top level's dtype, tie_word_embeddings and name. Every size must be a
// positive integer within generous limits; num_key_value_heads defaults to
// num_attention_heads and must divide it; head_dim defaults to
// hidden_size / num_attention_heads. The error names the offending field.
func ParseConfig(b []byte) (Config, error) {
	if len(b) > MaxConfigBytes {
		return Config{}, fmt.Errorf("config is %d bytes, over the %d-byte limit: pass the model's config.json", len(b), MaxConfigBytes)
	}
	var top hfConfig
	if err := decodeStrict(b, &top); err != nil {
		return Config{}, fmt.Errorf("not a JSON config: %w", err)
	}
	c := top
	if len(top.TextConfig) > 0 && string(top.TextConfig) != "null" && top.Layers == nil {
		var text hfConfig
		if err := decodeStrict(top.TextConfig, &text); err != nil {
			return Config{}, fmt.Errorf("text_config: %w", err)
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
	var bad []string
	need := func(p *int, name string, hi int) int {
		switch {
		case p == nil:
			bad = append(bad, name)
			return 0
		case *p <= 0 || *p > hi:
			bad = append(bad, fmt.Sprintf("%s (%d: must be 1..%d)", name, *p, hi))
			return 0
		}
		return *p
	}
	m := Config{
		Name:                  c.NameOrPath,
		ModelType:             c.ModelType,
		Layers:                need(c.Layers, "num_hidden_layers", maxLayers),
		Hidden:                need(c.Hidden, "hidden_size", maxHidden),
		Heads:                 need(c.Heads, "num_attention_heads", maxHeads),
		FFN:                   need(c.FFN, "intermediate_size", maxFFN),
		Vocab:                 need(c.Vocab, "vocab_size", maxVocab),
		MaxPositionEmbeddings: need(c.MaxPositionEmbeddings, "max_position_embeddings", maxPositions),
	}
	if len(bad) > 0 {
		return Config{}, fmt.Errorf("missing or invalid %s (required: %s)", strings.Join(bad, ", "), requiredFields)
	}
	if len(c.Architectures) > 0 {
		m.Architecture = c.Architectures[0]
	}
	m.KVHeads = m.Heads
	if c.KVHeads != nil {
		m.KVHeads = *c.KVHeads
	}
	if m.KVHeads <= 0 || m.Heads%m.KVHeads != 0 {
		return Config{}, fmt.Errorf("num_key_value_heads %d must be positive and divide num_attention_heads %d", m.KVHeads, m.Heads)
	}
	if c.HeadDim != nil {
		if *c.HeadDim <= 0 || *c.HeadDim > maxHeadDim {
			return Config{}, fmt.Errorf("head_dim %d: must be 1..%d", *c.HeadDim, maxHeadDim)
		}
		m.HeadDim = *c.HeadDim
	} else {
		if m.Hidden%m.Heads != 0 {
			return Config{}, fmt.Errorf("no head_dim, and hidden_size %d is not a multiple of num_attention_heads %d: add head_dim to the config", m.Hidden, m.Heads)
		}
		m.HeadDim = m.Hidden / m.Heads
		if m.HeadDim > maxHeadDim {
			return Config{}, fmt.Errorf("hidden_size / num_attention_heads = %d: must be at most %d", m.HeadDim, maxHeadDim)
		}
	}
	m.TiedEmbeddings = c.TieWordEmbeddings != nil && *c.TieWordEmbeddings
	m.QKVBias = c.ModelType == "qwen2" || (c.AttentionBias != nil && *c.AttentionBias)
	dt := c.TorchDType
	if dt == "" {
		dt = c.DType
	}
	switch strings.TrimPrefix(dt, "torch.") {
	case "":
	case "bfloat16":
		m.DType = "bfloat16"
	case "float16", "half":
		m.DType = "float16"
	case "float32", "float":
		m.DType = "float32"
	default:
		return Config{}, fmt.Errorf("torch_dtype %q: accepted: bfloat16, float16, float32", dt)
	}
	if err := m.slidingLayout(c); err != nil {
		return Config{}, err
	}
	return m, nil
}

// slidingLayout sets SlidingWindow and FullLayers: a window applies when
// sliding_window is positive, use_sliding_window is not false and the
// window is shorter than max_position_embeddings. Which layers use it comes
// from layer_types when present, else from the model type's pattern
// (Gemma-2: every other layer; Gemma-3: all but every
// sliding_window_pattern-th), else every layer.
func (m *Config) slidingLayout(c hfConfig) error {
	if c.SlidingWindow != nil && (*c.SlidingWindow < 0 || *c.SlidingWindow > maxPositions) {
		return fmt.Errorf("sliding_window %d: must be 0..%d or null", *c.SlidingWindow, maxPositions)
	}
	if c.LayerTypes != nil && len(c.LayerTypes) != m.Layers {
		return fmt.Errorf("layer_types has %d entries, num_hidden_layers is %d: they must match", len(c.LayerTypes), m.Layers)
	}
	full := 0
	for i, t := range c.LayerTypes {
		switch t {
		case "full_attention":
			full++
		case "sliding_attention":
		default:
			return fmt.Errorf("layer_types[%d] %q: accepted: full_attention, sliding_attention", i, t)
		}
	}
	if c.SlidingWindow == nil || *c.SlidingWindow == 0 || (c.UseSlidingWindow != nil && !*c.UseSlidingWindow) ||
		*c.SlidingWindow >= m.MaxPositionEmbeddings {
		return nil
	}
	switch {
	case c.LayerTypes != nil:
		if full == m.Layers {
			return nil
		}
		m.FullLayers = full
	case m.ModelType == "gemma2":
		m.FullLayers = m.Layers / 2 // layers 1, 3, 5, … attend globally
	case m.ModelType == "gemma3_text" || m.ModelType == "gemma3":
		pattern := 6
		if c.SlidingWindowPattern != nil {
			pattern = *c.SlidingWindowPattern
		}
		if pattern <= 0 || pattern > maxLayers {
			return fmt.Errorf("sliding_window_pattern %d: must be 1..%d", pattern, maxLayers)
		}
		m.FullLayers = m.Layers / pattern
		if m.FullLayers == m.Layers {
			return nil
		}
	}
	m.SlidingWindow = *c.SlidingWindow
	return nil
}

// decodeStrict decodes one JSON value into v and refuses trailing data.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

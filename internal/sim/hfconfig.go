package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
)

// LoadHFConfig reads a Hugging Face config.json (path may also be the
// directory holding it) into a Model. Multimodal configs that nest the
// language model under "text_config" (LLaVA) are read from there; only the
// language model is simulated. The required fields are num_hidden_layers,
// hidden_size, num_attention_heads, intermediate_size, vocab_size and
// max_position_embeddings; num_key_value_heads defaults to
// num_attention_heads, head_dim to hidden_size/num_attention_heads,
// tie_word_embeddings to false; every torch_dtype runs in 16 bits (vLLM's --dtype auto). The model is
// named after _name_or_path, or else the directory holding the file.
func LoadHFConfig(path string) (Model, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	b, err := readConfigFile(path)
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

// readConfigFile reads path, refusing a file over kvcalc.MaxConfigBytes
// before reading it all (a weights file passed by mistake).
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, kvcalc.MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > kvcalc.MaxConfigBytes {
		return nil, fmt.Errorf("%s is over %d bytes: pass the model's config.json (or the directory holding it)", path, kvcalc.MaxConfigBytes)
	}
	return b, nil
}

// parseHFConfig reads config.json bytes with the KV calculator's parser,
// so the simulator and `ttftlab kv` read a config the same way.
func parseHFConfig(b []byte) (Model, error) {
	c, err := kvcalc.ParseConfig(b)
	if err != nil {
		return Model{}, err
	}
	// The whole config, dtype included: vLLM's --dtype auto runs a float32
	// checkpoint in 16 bits, and Model's arithmetic does the same
	// (kvcalc.RuntimeDTypeBytes), as the KV plan assumes.
	m := Model{Config: c}
	return m, nil
}

// errNoModel is returned when neither a built-in model nor a config is named.
var errNoModel = errors.New("--model: must not be empty without --model-config")

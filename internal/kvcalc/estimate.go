package kvcalc

// The figures in this file are estimates: vLLM measures the weights and the
// activation peak on the GPU during its profile run, and a calculator can
// only count parameters and buffers. Pass a measured "Available KV cache
// memory" (Inputs.KVCacheMemoryBytes) to replace them.

// NonEmbeddingParams returns the parameter count of the transformer layers
// and the final norm, excluding the embedding and the lm_head: per layer
// the q, k, v and o projections, the gated MLP (3·d·ffn), two norms, and
// the q/k/v biases where the model has them.
func (c Config) NonEmbeddingParams() int64 {
	d := int64(c.Hidden)
	q := int64(c.Heads) * int64(c.HeadDim)
	kv := int64(c.KVHeads) * int64(c.HeadDim)
	perLayer := d*q + 2*d*kv + q*d + 3*d*int64(c.FFN) + 2*d
	if c.QKVBias {
		perLayer += q + 2*kv
	}
	return int64(c.Layers)*perLayer + d
}

// LMHeadParams returns vocab·d, the lm_head (and embedding) size.
func (c Config) LMHeadParams() int64 { return int64(c.Vocab) * int64(c.Hidden) }

// TotalParams returns the parameter count as Hugging Face reports it: the
// layers, the embedding, the lm_head unless tied, and ExtraParams.
func (c Config) TotalParams() int64 {
	n := c.NonEmbeddingParams() + c.LMHeadParams()
	if !c.TiedEmbeddings {
		n += c.LMHeadParams()
	}
	return n + c.ExtraParams
}

// EstimateWeightBytes estimates one GPU's weights: total parameters ×
// dtypeBytes, split evenly over tp tensor-parallel ranks (vLLM shards the
// layers and the vocabulary; norms and biases are small).
func EstimateWeightBytes(c Config, dtypeBytes, tp int) float64 {
	return float64(c.TotalParams()) * float64(dtypeBytes) / float64(max(tp, 1))
}

// EstimateActivationBytes estimates the torch peak of vLLM's profile run,
// a forward pass over maxBatchedTokens dummy tokens that samples maxSeqs
// sequences: per token the MLP's gate/up output and a few hidden-size
// buffers (4·ffn + 8·d bytes), plus fp32 logits and probabilities for every
// sampled sequence (8·vocab bytes). About 1.5 GiB for Qwen2.5-1.5B at 8192
// tokens; the simulator's calibration table checks it against real logs.
func EstimateActivationBytes(c Config, maxBatchedTokens, maxSeqs int) float64 {
	return float64(maxBatchedTokens)*float64(4*c.FFN+8*c.Hidden) + float64(maxSeqs)*float64(c.Vocab)*8
}

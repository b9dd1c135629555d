package sim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// tokenizeRequest is vLLM's TokenizeRequest, the union of
// TokenizeCompletionRequest {"model", "prompt", "add_special_tokens"} and
// TokenizeChatRequest {"model", "messages", "add_generation_prompt",
// "continue_final_message", "add_special_tokens"}; both take
// "return_token_strs".
type tokenizeRequest struct {
	Model                string          `json:"model"`
	Prompt               json.RawMessage `json:"prompt"`
	Messages             json.RawMessage `json:"messages"`
	AddSpecialTokens     *bool           `json:"add_special_tokens"`
	AddGenerationPrompt  *bool           `json:"add_generation_prompt"`
	ContinueFinalMessage bool            `json:"continue_final_message"`
	ReturnTokenStrs      *bool           `json:"return_token_strs"`
}

// tokenizeResponse is vLLM's TokenizeResponse, in its field order.
type tokenizeResponse struct {
	Count       int       `json:"count"`
	MaxModelLen int       `json:"max_model_len"`
	Tokens      []uint32  `json:"tokens"`
	TokenStrs   *[]string `json:"token_strs"`
}

// handleTokenize is vLLM's POST /tokenize. It counts exactly as the
// generation endpoints do: the completions form gives the ids a completion
// request with the same prompt is charged for, and the chat form (with the
// default add_generation_prompt) those of a chat request with the same
// messages. The simulator adds no special tokens, so add_special_tokens is
// accepted and has no effect.
func (e *Engine) handleTokenize(w http.ResponseWriter, r *http.Request) {
	var req tokenizeRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	var pieces []string
	switch {
	case len(req.Messages) > 0 && string(req.Messages) != "null":
		opt := chatTemplate{addGenerationPrompt: req.AddGenerationPrompt == nil || *req.AddGenerationPrompt, continueFinalMessage: req.ContinueFinalMessage}
		if opt.addGenerationPrompt && opt.continueFinalMessage {
			writeError(w, validationError("Value error, Cannot set both `continue_final_message` and `add_generation_prompt` to True."))
			return
		}
		msgs, err := parseMessages(req.Messages)
		if err != nil {
			writeError(w, err)
			return
		}
		pieces = chatPieces(nil, msgs, opt)
	case len(req.Prompt) > 0 && string(req.Prompt) != "null":
		var prompt string
		if json.Unmarshal(req.Prompt, &prompt) != nil {
			writeError(w, validationError("prompt: Input should be a valid string, got %s", truncate(string(req.Prompt), 80)))
			return
		}
		eachPiece(prompt, func(p string) { pieces = append(pieces, p) })
	default:
		writeError(w, validationError("prompt or messages: Field required (send {\"prompt\": \"...\"} or {\"messages\": [...]})"))
		return
	}
	if err := e.checkModel(req.Model); err != nil {
		writeError(w, err)
		return
	}
	resp := tokenizeResponse{Count: len(pieces), MaxModelLen: e.cfg.MaxModelLen, Tokens: make([]uint32, len(pieces))}
	for i, p := range pieces {
		resp.Tokens[i] = e.tok.pieceID(p)
	}
	if req.ReturnTokenStrs != nil && *req.ReturnTokenStrs {
		resp.TokenStrs = &pieces
	}
	writeJSON(w, http.StatusOK, resp)
}

// detokenizeRequest is vLLM's DetokenizeRequest.
type detokenizeRequest struct {
	Model  string          `json:"model"`
	Tokens json.RawMessage `json:"tokens"`
}

// handleDetokenize is vLLM's POST /detokenize. The simulator's token ids
// are hashes, so text cannot be recovered: each id gives a stand-in word of
// at most four characters (the id in base 36, e.g. 151642 → "390a"), so the
// text tokenises to exactly as many tokens as it was given.
func (e *Engine) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	var req detokenizeRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	var ids []int64
	if len(req.Tokens) == 0 || json.Unmarshal(req.Tokens, &ids) != nil {
		writeError(w, validationError("tokens: Input should be a valid list of integers, got %s", truncate(string(req.Tokens), 80)))
		return
	}
	if err := e.checkModel(req.Model); err != nil {
		writeError(w, err)
		return
	}
	var b strings.Builder
	for _, id := range ids {
		if id < 0 || id >= int64(e.tok.vocab) {
			writeError(w, badRequest("token id %d is out of vocabulary: this model's ids are 0..%d", id, e.tok.vocab-1))
			return
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatInt(id, 36))
	}
	writeJSON(w, http.StatusOK, struct {
		Prompt string `json:"prompt"`
	}{b.String()})
}

// parseMessages converts chat messages to the template's input.
func parseMessages(raw json.RawMessage) ([]chatMessage, *apiError) {
	var in []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, validationError("messages: Input should be a valid list of {\"role\", \"content\"} objects: %v", err)
	}
	if len(in) == 0 {
		return nil, validationError("messages: Field required (at least one message)")
	}
	msgs := make([]chatMessage, len(in))
	for i, m := range in {
		text, err := messageText(m.Content)
		if err != nil {
			return nil, err
		}
		msgs[i] = chatMessage{Role: m.Role, Content: text}
	}
	return msgs, nil
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

package sim

import (
	"hash/fnv"
	"strings"
	"unicode/utf8"
)

// The simulator's tokeniser is deterministic and model-agnostic:
//
//   - Text is split into whitespace-separated words (strings.Fields).
//   - A word of up to 4 characters is one token; a longer word is split into
//     pieces of 4 characters, so it counts as ⌈len/4⌉ tokens (len in runes).
//   - A token's id is FNV-32a(piece) mod vocab_size, so equal text always
//     gives equal ids and the prefix cache sees real prefix sharing.
//   - Chat messages are rendered with a ChatML-like template that costs
//     messageOverhead (10) tokens per message around the content, plus
//     generationPromptTokens (3) for the assistant turn's header.
//   - Generated text is a stream of pseudo-words, one token each (" lorem"),
//     chosen from the seed and the token's position only.
//
// Real tokenisers give ~1.3 tokens per English word; this rule gives 1 per
// short word, which is close enough for load shaping and exact for
// reproducibility.
const (
	charsPerToken          = 4
	messageOverhead        = 10
	generationPromptTokens = 3
)

// tokenizer turns text into token ids. It is immutable and safe for
// concurrent use.
type tokenizer struct {
	vocab uint32
	seed  uint64
}

func newTokenizer(vocab int, seed int64) tokenizer {
	return tokenizer{vocab: uint32(vocab), seed: uint64(seed)}
}

// pieceID returns the token id of one piece of text.
func (t tokenizer) pieceID(piece string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(piece))
	return h.Sum32() % t.vocab
}

// encode appends the token ids of text to dst.
func (t tokenizer) encode(dst []uint32, text string) []uint32 {
	eachPiece(text, func(piece string) { dst = append(dst, t.pieceID(piece)) })
	return dst
}

// eachPiece calls f with every token piece of text, in order.
func eachPiece(text string, f func(piece string)) {
	for _, w := range strings.Fields(text) {
		for len(w) > 0 {
			cut, n := 0, 0
			for cut < len(w) && n < charsPerToken {
				_, size := utf8.DecodeRuneInString(w[cut:])
				cut += size
				n++
			}
			f(w[:cut])
			w = w[cut:]
		}
	}
}

// chatMessage is one rendered chat turn.
type chatMessage struct {
	Role    string
	Content string
}

// chatTemplate are the chat-template options of vLLM's chat and /tokenize
// requests.
type chatTemplate struct {
	// addGenerationPrompt appends the assistant turn's header (vLLM's
	// default for chat requests).
	addGenerationPrompt bool
	// continueFinalMessage leaves the last message open (no end tokens).
	continueFinalMessage bool
}

// chatPieces renders msgs with the ChatML-like template and appends the
// pieces to dst: messageOverhead (10) pieces around each message's content
// and generationPromptTokens (3) for the assistant header.
func chatPieces(dst []string, msgs []chatMessage, opt chatTemplate) []string {
	const start, end, nl = "<|im_start|>", "<|im_end|>", "\n"
	for i, m := range msgs {
		// 5 pieces before the content and 5 after: messageOverhead in all.
		dst = append(dst, start, m.Role, nl, m.Role, nl)
		eachPiece(m.Content, func(p string) { dst = append(dst, p) })
		if opt.continueFinalMessage && i == len(msgs)-1 {
			return dst
		}
		dst = append(dst, end, nl, end, nl, nl)
	}
	if opt.addGenerationPrompt {
		dst = append(dst, start, "assistant", nl)
	}
	return dst
}

// encodeChat renders messages with the chat template and its generation
// prompt, as a chat completion request does, and appends the ids.
func (t tokenizer) encodeChat(dst []uint32, msgs []chatMessage) []uint32 {
	return t.encodeChatWith(dst, msgs, chatTemplate{addGenerationPrompt: true})
}

// encodeChatWith is encodeChat with explicit template options.
func (t tokenizer) encodeChatWith(dst []uint32, msgs []chatMessage, opt chatTemplate) []uint32 {
	for _, p := range chatPieces(nil, msgs, opt) {
		dst = append(dst, t.pieceID(p))
	}
	return dst
}

// outputWords is the vocabulary of generated text.
var outputWords = [...]string{
	"lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
	"sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et",
	"dolore", "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis",
	"nostrud", "exercitation", "ullamco", "laboris", "nisi", "aliquip", "ex", "ea",
}

// outputWord returns the text of the k-th generated token (0-based),
// including its leading space.
func (t tokenizer) outputWord(k int) string {
	x := t.seed ^ (uint64(k)+1)*0x9E3779B97F4A7C15
	x ^= x >> 31
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 29
	return " " + outputWords[x%uint64(len(outputWords))]
}

// outputID returns the token id of the k-th generated token.
func (t tokenizer) outputID(k int) uint32 { return t.pieceID(t.outputWord(k)) }

// outputText returns the concatenated text of generated tokens [from, to).
func (t tokenizer) outputText(from, to int) string {
	var b strings.Builder
	for k := from; k < to; k++ {
		b.WriteString(t.outputWord(k))
	}
	return b.String()
}

package sim

import "bytes"

// chunkTemplate is the encoding of a stream's plain token chunk (no
// finish_reason, no usage) split around its text, so that the per-step
// chunk of a stream is two copies and the text's escaping instead of a
// reflective encoding/json pass. The parts come from marshal itself, so the
// bytes are those of marshal by construction.
type chunkTemplate struct {
	prefix, suffix []byte // nil: no template; use marshal
}

// chunkSentinel stands in for the text while the template is cut; it is
// plain ASCII, which JSON encodes as itself.
const chunkSentinel = "\x60TTFTLAB-SIM-TEXT\x60"

// newChunkTemplate cuts the template out of sample, a chunk marshalled with
// chunkSentinel as its text. If the sentinel does not occur exactly once
// (an ID or model name containing it), the template is empty and every
// chunk goes through marshal.
func newChunkTemplate(sample []byte) chunkTemplate {
	quoted := []byte(`"` + chunkSentinel + `"`)
	if bytes.Count(sample, quoted) != 1 {
		return chunkTemplate{}
	}
	i := bytes.Index(sample, quoted)
	return chunkTemplate{prefix: sample[:i], suffix: sample[i+len(quoted):]}
}

// ok reports whether the template can be used.
func (t chunkTemplate) ok() bool { return t.prefix != nil }

// appendEvent appends the SSE event `data: <chunk>\n\n` of the chunk whose
// text is text to dst.
func (t chunkTemplate) appendEvent(dst []byte, text string) []byte {
	dst = append(dst, sseData...)
	dst = append(dst, t.prefix...)
	dst = appendJSONString(dst, text)
	dst = append(dst, t.suffix...)
	return append(dst, sseEnd...)
}

// appendJSONString appends s as a JSON string, byte for byte as marshal
// (encoding/json without HTML escaping) writes it: printable ASCII other
// than '"' and '\\' is copied; any other string is handed to marshal.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return append(dst, marshal(s)...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendSSE appends the SSE event `data: <payload>\n\n` to dst.
func appendSSE(dst, payload []byte) []byte {
	dst = append(dst, sseData...)
	dst = append(dst, payload...)
	return append(dst, sseEnd...)
}

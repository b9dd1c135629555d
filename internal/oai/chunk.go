package oai

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth matches encoding/json's nesting limit, so that the scanner
// accepts exactly the documents json.Valid accepts.
const maxJSONDepth = 10000

// chunkScan is what scanChunk extracts from one streamed chunk (or a whole
// non-streaming body). It is reset for every chunk and allocates nothing in
// steady state. Keys match exactly (case-sensitively); a key given twice
// counts once, with its last value, as when decoding into a map.
type chunkScan struct {
	// content is set when a choice has a non-empty text, delta.content or
	// message.content string.
	content bool
	// reasoning is set when a choice has a non-empty reasoning_content or
	// reasoning string in delta or message.
	reasoning bool
	// nChoices is the length of the choices array (0 when absent or not an
	// array).
	nChoices int
	// finish is the raw (still escaped) last non-empty finish_reason string,
	// aliasing the scanned data.
	finish []byte
	// usage is set when usage is an object; the numbers are 0 when absent
	// or not integers, as are cached (hasCached then false).
	usage      bool
	prompt     int
	completion int
	cached     int
	hasCached  bool
	// errField is set for {"error": <non-null>}, errObject for
	// {"object": "error"}; see isErr.
	errField, errObject bool

	// preview, when non-nil, receives the unescaped content strings until
	// it holds previewBytes bytes.
	preview *[]byte

	// deep holds the object/array kind of nesting levels past 64 while a
	// deeply nested value is skipped; it is nil in any real chunk.
	deep []uint64
}

// choiceScan is the state of one choice object: each field keeps its last
// value, and the choice is folded into the chunk when it closes.
type choiceScan struct {
	text                            bool
	deltaContent, msgContent        bool
	deltaReasoning, deltaReasoning2 bool // reasoning_content, reasoning
	msgReasoning, msgReasoning2     bool
	finish                          []byte
}

var errSyntax = errors.New("invalid JSON")

// syntaxError describes a scan failure at an offset.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.off, e.msg)
}
func (e *syntaxError) Unwrap() error { return errSyntax }

// scanChunk scans one JSON document. It validates the whole document as
// encoding/json would (json.Valid) and returns a *syntaxError when it is
// invalid. A top-level value other than an object is valid and carries
// nothing. It never panics.
func (c *chunkScan) scan(data []byte) error {
	p := c.preview
	deep := c.deep[:0]
	*c = chunkScan{preview: p, deep: deep}
	i := skipWS(data, 0)
	if i >= len(data) {
		return &syntaxError{i, "empty document"}
	}
	var err error
	if data[i] == '{' {
		i, err = c.object(data, i, 1, ctxTop, nil)
	} else {
		i, err = c.skip(data, i, 0)
	}
	if err != nil {
		return err
	}
	if i = skipWS(data, i); i != len(data) {
		return &syntaxError{i, "data after the top-level value"}
	}
	return nil
}

// Object contexts: which known object a scan is in.
const (
	ctxTop = iota
	ctxChoice
	ctxDelta
	ctxMessage
	ctxUsage
	ctxDetails
)

// object scans the object at data[i] == '{' in context ctx; ch is the
// current choice for ctxChoice, ctxDelta and ctxMessage.
func (c *chunkScan) object(data []byte, i, depth, ctx int, ch *choiceScan) (int, error) {
	if depth > maxJSONDepth {
		return i, &syntaxError{i, "exceeded max depth"}
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return i, &syntaxError{i, "expected a string key"}
		}
		ks := i + 1
		ke, esc, err := scanString(data, i)
		if err != nil {
			return ke, err
		}
		key := data[ks : ke-1]
		var kb [64]byte
		if esc {
			key = unescapeKey(kb[:0], key)
		}
		i = skipWS(data, ke)
		if i >= len(data) || data[i] != ':' {
			return i, &syntaxError{i, "expected ':' after an object key"}
		}
		i = skipWS(data, i+1)
		if i >= len(data) {
			return i, &syntaxError{i, "unexpected end of data"}
		}
		if i, err = c.member(data, i, depth, ctx, ch, key); err != nil {
			return i, err
		}
		i = skipWS(data, i)
		if i >= len(data) {
			return i, &syntaxError{i, "unexpected end of object"}
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, &syntaxError{i, "expected ',' or '}' in an object"}
		}
	}
}

// member scans the value at data[i] of the member named key.
func (c *chunkScan) member(data []byte, i, depth, ctx int, ch *choiceScan, key []byte) (int, error) {
	v := data[i]
	switch ctx {
	case ctxTop:
		switch string(key) {
		case "choices":
			c.content, c.reasoning, c.nChoices, c.finish = false, false, 0, nil
			if v == '[' {
				return c.choices(data, i, depth+1)
			}
		case "usage":
			c.usage, c.prompt, c.completion, c.cached, c.hasCached = false, 0, 0, 0, false
			if v == '{' {
				c.usage = true
				return c.object(data, i, depth+1, ctxUsage, nil)
			}
		case "error":
			c.errField = v != 'n' // anything but null; a bad literal fails below
		case "object":
			c.errObject = false
			if v == '"' {
				e, esc, err := scanString(data, i)
				if err == nil {
					c.errObject = unescapedEquals(data[i+1:e-1], esc, "error")
				}
				return e, err
			}
		}
	case ctxChoice:
		switch string(key) {
		case "text":
			ch.text = false
			if v == '"' {
				return c.stringValue(data, i, &ch.text, true)
			}
		case "delta":
			ch.deltaContent, ch.deltaReasoning = false, false
			if v == '{' {
				return c.object(data, i, depth+1, ctxDelta, ch)
			}
		case "message":
			ch.msgContent, ch.msgReasoning = false, false
			if v == '{' {
				return c.object(data, i, depth+1, ctxMessage, ch)
			}
		case "finish_reason":
			ch.finish = nil
			if v == '"' {
				e, _, err := scanString(data, i)
				if err == nil && e-i > 2 {
					ch.finish = data[i+1 : e-1]
				}
				return e, err
			}
		}
	case ctxDelta, ctxMessage:
		content, reasoning, other := &ch.deltaContent, &ch.deltaReasoning, &ch.deltaReasoning2
		if ctx == ctxMessage {
			content, reasoning, other = &ch.msgContent, &ch.msgReasoning, &ch.msgReasoning2
		}
		switch string(key) {
		case "content":
			*content = false
			if v == '"' {
				return c.stringValue(data, i, content, true)
			}
		case "reasoning_content":
			*reasoning = false
			if v == '"' {
				return c.stringValue(data, i, reasoning, false)
			}
		case "reasoning":
			*other = false
			if v == '"' {
				return c.stringValue(data, i, other, false)
			}
		}
	case ctxUsage:
		switch string(key) {
		case "prompt_tokens":
			return c.numberValue(data, i, depth, &c.prompt, nil)
		case "completion_tokens":
			return c.numberValue(data, i, depth, &c.completion, nil)
		case "prompt_tokens_details":
			c.cached, c.hasCached = 0, false
			if v == '{' {
				return c.object(data, i, depth+1, ctxDetails, nil)
			}
		}
	case ctxDetails:
		if string(key) == "cached_tokens" {
			return c.numberValue(data, i, depth, &c.cached, &c.hasCached)
		}
	}
	return c.skip(data, i, depth)
}

// isErr reports whether the chunk is an error chunk.
func (c *chunkScan) isErr() bool { return c.errField || c.errObject }

// stringValue scans the string at data[i]; *nonEmpty says whether it
// decodes to a non-empty string (every escape decodes to at least one
// character, so that is a non-empty raw string). Content strings are
// copied, unescaped, into the preview until it is full.
func (c *chunkScan) stringValue(data []byte, i int, nonEmpty *bool, content bool) (int, error) {
	e, esc, err := scanString(data, i)
	if err != nil {
		return e, err
	}
	raw := data[i+1 : e-1]
	*nonEmpty = len(raw) > 0
	if content && len(raw) > 0 && c.preview != nil && len(*c.preview) < previewBytes {
		*c.preview = appendUnescaped(*c.preview, raw, esc, previewBytes-len(*c.preview))
	}
	return e, nil
}

// numberValue scans the value at data[i]; *n is set to it when it is an
// integer that fits in an int, else to 0; *ok (when not nil) says whether
// it was such an integer.
func (c *chunkScan) numberValue(data []byte, i, depth int, n *int, ok *bool) (int, error) {
	*n = 0
	if ok != nil {
		*ok = false
	}
	if b := data[i]; b != '-' && (b < '0' || b > '9') {
		return c.skip(data, i, depth)
	}
	e, v, isInt, err := scanNumber(data, i)
	if err != nil || !isInt {
		return e, err
	}
	*n = v
	if ok != nil {
		*ok = true
	}
	return e, nil
}

// unescapedEquals reports whether the raw string equals want once
// unescaped.
func unescapedEquals(raw []byte, esc bool, want string) bool {
	if !esc {
		return string(raw) == want
	}
	var kb [64]byte
	return string(unescapeKey(kb[:0], raw)) == want
}

// choices scans the choices array at data[i] == '['.
func (c *chunkScan) choices(data []byte, i, depth int) (int, error) {
	if depth > maxJSONDepth {
		return i, &syntaxError{i, "exceeded max depth"}
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, nil
	}
	for {
		if i >= len(data) {
			return i, &syntaxError{i, "unexpected end of array"}
		}
		c.nChoices++
		var err error
		if data[i] == '{' {
			var ch choiceScan
			if i, err = c.object(data, i, depth+1, ctxChoice, &ch); err != nil {
				return i, err
			}
			c.content = c.content || ch.text || ch.deltaContent || ch.msgContent
			c.reasoning = c.reasoning || ch.deltaReasoning || ch.deltaReasoning2 || ch.msgReasoning || ch.msgReasoning2
			if ch.finish != nil {
				c.finish = ch.finish
			}
		} else if i, err = c.skip(data, i, depth); err != nil {
			return i, err
		}
		i = skipWS(data, i)
		if i >= len(data) {
			return i, &syntaxError{i, "unexpected end of array"}
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case ']':
			return i + 1, nil
		default:
			return i, &syntaxError{i, "expected ',' or ']' in an array"}
		}
	}
}

// skip validates and skips any value at data[i], without recursion. depth
// is the nesting depth of the enclosing container.
func (c *chunkScan) skip(data []byte, i, depth int) (int, error) {
	if i >= len(data) {
		return i, &syntaxError{i, "unexpected end of data"}
	}
	switch b := data[i]; {
	case b == '"':
		e, _, err := scanString(data, i)
		return e, err
	case b == '-' || (b >= '0' && b <= '9'):
		e, _, _, err := scanNumber(data, i)
		return e, err
	case b == 't':
		return literal(data, i, "true")
	case b == 'f':
		return literal(data, i, "false")
	case b == 'n':
		return literal(data, i, "null")
	case b != '{' && b != '[':
		return i, &syntaxError{i, fmt.Sprintf("invalid character %q looking for a value", b)}
	}
	// A container: keep the kind of each open level (1 = object) in a bit
	// stack; the first 64 levels live in a word.
	var low uint64
	n := 0 // open levels
	push := func(obj bool) {
		if n < 64 {
			low = low&^(1<<n) | b2u(obj)<<n
		} else {
			w, bit := (n-64)/64, (n-64)%64
			for len(c.deep) <= w {
				c.deep = append(c.deep, 0)
			}
			c.deep[w] = c.deep[w]&^(1<<bit) | b2u(obj)<<bit
		}
		n++
	}
	top := func() bool {
		k := n - 1
		if k < 64 {
			return low&(1<<k) != 0
		}
		return c.deep[(k-64)/64]&(1<<((k-64)%64)) != 0
	}
	for {
		// At the start of a value.
		switch b := data[i]; {
		case b == '{' || b == '[':
			if depth+n+1 > maxJSONDepth {
				return i, &syntaxError{i, "exceeded max depth"}
			}
			push(b == '{')
			i = skipWS(data, i+1)
			if i >= len(data) {
				return i, &syntaxError{i, "unexpected end of data"}
			}
			if (b == '{' && data[i] == '}') || (b == '[' && data[i] == ']') {
				n--
				i++
				break
			}
			if b == '{' {
				var err error
				if i, err = objectKey(data, i); err != nil {
					return i, err
				}
			}
			continue
		case b == '"':
			e, _, err := scanString(data, i)
			if err != nil {
				return e, err
			}
			i = e
		case b == '-' || (b >= '0' && b <= '9'):
			e, _, _, err := scanNumber(data, i)
			if err != nil {
				return e, err
			}
			i = e
		case b == 't', b == 'f', b == 'n':
			lit := "null"
			if b == 't' {
				lit = "true"
			} else if b == 'f' {
				lit = "false"
			}
			e, err := literal(data, i, lit)
			if err != nil {
				return e, err
			}
			i = e
		default:
			return i, &syntaxError{i, fmt.Sprintf("invalid character %q looking for a value", b)}
		}
		// After a value: close containers or move to the next element.
	after:
		for {
			if n == 0 {
				return i, nil
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return i, &syntaxError{i, "unexpected end of data"}
			}
			obj := top()
			switch d := data[i]; {
			case d == ',':
				i = skipWS(data, i+1)
				if obj {
					var err error
					if i, err = objectKey(data, i); err != nil {
						return i, err
					}
				} else if i >= len(data) {
					return i, &syntaxError{i, "unexpected end of data"}
				}
			case (d == '}' && obj) || (d == ']' && !obj):
				n--
				i++
				continue
			default:
				return i, &syntaxError{i, "expected ',' or a closing bracket"}
			}
			break after
		}
	}
}

// objectKey scans `"key" :` at data[i] and returns the offset of the value.
func objectKey(data []byte, i int) (int, error) {
	if i >= len(data) || data[i] != '"' {
		return i, &syntaxError{i, "expected a string key"}
	}
	e, _, err := scanString(data, i)
	if err != nil {
		return e, err
	}
	i = skipWS(data, e)
	if i >= len(data) || data[i] != ':' {
		return i, &syntaxError{i, "expected ':' after an object key"}
	}
	i = skipWS(data, i+1)
	if i >= len(data) {
		return i, &syntaxError{i, "unexpected end of data"}
	}
	return i, nil
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func literal(data []byte, i int, lit string) (int, error) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, &syntaxError{i, "invalid literal"}
	}
	return i + len(lit), nil
}

func skipWS(data []byte, i int) int {
	if i < len(data) && data[i] > ' ' {
		return i // compact JSON: the common case, inlined
	}
	return skipWSSlow(data, i)
}

func skipWSSlow(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// strStop marks the bytes that end the fast path of a string scan: the
// quote, the backslash and control characters.
var strStop = func() (t [256]bool) {
	for b := range 0x20 {
		t[b] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for b := '0'; b <= '9'; b++ {
		t[b] = byte(b - '0')
	}
	for b := 'a'; b <= 'f'; b++ {
		t[b] = byte(b - 'a' + 10)
		t[b-'a'+'A'] = byte(b - 'a' + 10)
	}
	return t
}()

// Byte-lane constants for scanString.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// scanString scans the string whose opening quote is at data[i] and
// returns the offset just past the closing quote and whether it contains
// escapes.
func scanString(data []byte, i int) (end int, esc bool, err error) {
	j := i + 1
	for {
		// Eight bytes at a time: the lowest flagged byte of mask is the
		// first quote, backslash or control character (higher flags may be
		// false positives from borrows, and are never used).
		for j+8 <= len(data) {
			x := binary.LittleEndian.Uint64(data[j:])
			q, bs := x^(lsb*'"'), x^(lsb*'\\')
			mask := ((q - lsb) &^ q) | ((bs - lsb) &^ bs) | ((x - lsb*0x20) &^ x)
			if mask &= msb; mask != 0 {
				j += bits.TrailingZeros64(mask) / 8
				break
			}
			j += 8
		}
		for j < len(data) && !strStop[data[j]] {
			j++
		}
		if j >= len(data) {
			return j, esc, &syntaxError{j, "unterminated string"}
		}
		switch data[j] {
		case '"':
			return j + 1, esc, nil
		case '\\':
			esc = true
			if j+1 >= len(data) {
				return j, esc, &syntaxError{j, "unterminated escape"}
			}
			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if len(data)-j < 6 || (hexVal[data[j+2]]|hexVal[data[j+3]]|hexVal[data[j+4]]|hexVal[data[j+5]]) == 0xff {
					return j, esc, &syntaxError{j, "invalid \\u escape"}
				}
				j += 6
			default:
				return j, esc, &syntaxError{j, "invalid escape"}
			}
		default:
			return j, esc, &syntaxError{j, "control character in string"}
		}
	}
}

// scanNumber scans the number at data[i] and returns its end and, when it
// is an integer that fits in an int64, its value.
func scanNumber(data []byte, i int) (end, v int, isInt bool, err error) {
	j := i
	neg := false
	if data[j] == '-' {
		neg = true
		j++
	}
	if j >= len(data) {
		return j, 0, false, &syntaxError{j, "invalid number"}
	}
	isInt = true
	var u uint64
	switch {
	case data[j] == '0':
		j++
	case data[j] >= '1' && data[j] <= '9':
		k := j
		for ; j < len(data) && data[j] >= '0' && data[j] <= '9'; j++ {
			u = u*10 + uint64(data[j]-'0') // may wrap; checked below
		}
		if j-k > 18 {
			// 19 digits or more may have wrapped: parse again, checked.
			u = 0
			for _, c := range data[k:j] {
				d := uint64(c - '0')
				if u > (1<<64-1-d)/10 {
					isInt = false
					break
				}
				u = u*10 + d
			}
		}
	default:
		return j, 0, false, &syntaxError{j, "invalid number"}
	}
	if j < len(data) && data[j] == '.' {
		isInt = false
		j++
		k := j
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			j++
		}
		if j == k {
			return j, 0, false, &syntaxError{j, "invalid number"}
		}
	}
	if j < len(data) && (data[j] == 'e' || data[j] == 'E') {
		isInt = false
		j++
		if j < len(data) && (data[j] == '+' || data[j] == '-') {
			j++
		}
		k := j
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			j++
		}
		if j == k {
			return j, 0, false, &syntaxError{j, "invalid number"}
		}
	}
	if !isInt {
		return j, 0, false, nil
	}
	if neg {
		if u > 1<<63 {
			return j, 0, false, nil
		}
		return j, int(-int64(u)), true, nil
	}
	if u > 1<<63-1 {
		return j, 0, false, nil
	}
	return j, int(u), true, nil
}

// unescapeKey unescapes a short key into buf (of capacity 64); a longer
// key is returned as the raw (escaped) bytes, which match no known key
// (every known key is ASCII and shorter than 32 bytes).
func unescapeKey(buf, raw []byte) []byte {
	out := appendUnescaped(buf, raw, true, cap(buf))
	if len(out) >= 32 {
		return raw
	}
	return out
}

// appendUnescaped appends the decoded string raw (the bytes between the
// quotes of a valid JSON string) to dst, at most limit bytes of it, cut at
// a rune boundary. Invalid surrogates decode to U+FFFD, as in encoding/json.
func appendUnescaped(dst, raw []byte, esc bool, limit int) []byte {
	if limit <= 0 {
		return dst
	}
	if !esc {
		return appendPrefix(dst, raw, limit)
	}
	end := len(dst) + limit
	for i := 0; i < len(raw); {
		b := raw[i]
		if b != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			n := len(dst)
			dst = appendPrefix(dst, raw[i:j], end-len(dst))
			if len(dst)-n < j-i {
				return dst
			}
			i = j
			continue
		}
		if i+1 >= len(raw) {
			return dst
		}
		var r rune
		switch raw[i+1] {
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			r = hex4(raw, i+2)
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = hex4(raw, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			i -= 2 // the common i += 2 below
		default: // '"', '\\', '/'
			r = rune(raw[i+1])
		}
		i += 2
		if r < 0 {
			r = utf8.RuneError
		}
		if len(dst)+utf8.RuneLen(r) > end {
			return dst
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

func hex4(raw []byte, i int) rune {
	if i+4 > len(raw) {
		return -1
	}
	var r rune
	for _, b := range raw[i : i+4] {
		v := hexVal[b]
		if v == 0xff {
			return -1
		}
		r = r<<4 | rune(v)
	}
	return r
}

// appendPrefix appends at most limit bytes of s to dst, backing off to a
// rune boundary when cut.
func appendPrefix(dst, s []byte, limit int) []byte {
	if len(s) <= limit {
		return append(dst, s...)
	}
	s = s[:max(limit, 0)]
	for k := 1; k <= utf8.UTFMax && k <= len(s); k++ {
		if utf8.RuneStart(s[len(s)-k]) {
			if !utf8.FullRune(s[len(s)-k:]) {
				s = s[:len(s)-k]
			}
			break
		}
	}
	return append(dst, s...)
}

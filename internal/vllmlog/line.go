// Package vllmlog parses vLLM's startup log into cold-start phases, figures
// and failure causes.
//
// It understands the line formats of vLLM v0.6 to v0.19 (and, defensively,
// later ones): the `(APIServer pid=N) ` process prefixes, ANSI colour codes,
// the bracketed and the older unbracketed `LEVEL MM-DD HH:MM:SS [file:line]`
// header, uvicorn's `INFO:     ` lines and un-prefixed traceback and tqdm
// output. It never fails on a line it does not understand; it skips it.
package vllmlog

import (
	"regexp"
	"strconv"
	"strings"
)

// Line is one log line taken apart. Fields that the line did not carry are
// empty (or zero).
type Line struct {
	// Raw is the line as it arrived, with ANSI codes stripped.
	Raw string
	// Process is the process name of a `(NAME pid=N) ` prefix, such as
	// "APIServer" or "EngineCore_DP0", and PID its pid.
	Process string
	PID     int
	// Level is DEBUG, INFO, WARNING, ERROR or CRITICAL when the line has a
	// vLLM or uvicorn header.
	Level string
	// Time is the header's timestamp as written ("01-23 15:50:06"): vLLM
	// writes no year and no zone, so it is kept as text.
	Time string
	// File and LineNo are the header's source location.
	File   string
	LineNo int
	// Message is the text after the header, or the whole line (less any
	// process prefix) when there is no header.
	Message string
}

var (
	ansiRE = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	// procRE matches the process prefix vLLM 0.10.1+ writes before every
	// line of a child process, e.g. "(EngineCore_DP0 pid=123) ". Older
	// multiproc workers wrote "(VllmWorker rank=0 pid=123) ".
	procRE = regexp.MustCompile(`\(([^()]*?) pid=(\d+)\)\s?`)
	// headerRE matches both the bracketed (0.7.4+) and the older
	// unbracketed header. It is not anchored so that foreign prefixes
	// (docker compose, journald) in front of it do not hide it.
	headerRE = regexp.MustCompile(`(?:^|\s)(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d\d-\d\d \d\d:\d\d:\d\d) \[?([^\]\s:]+):(\d+)\] ?(.*)$`)
	// uvicornRE matches uvicorn's "INFO:     message" lines.
	uvicornRE = regexp.MustCompile(`^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+(.*)$`)
)

// StripANSI removes ANSI escape sequences (colours) from s.
func StripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return ansiRE.ReplaceAllString(s, "")
}

// ParseLine takes one line apart. It is a pure function, safe for
// concurrent use. Carriage returns are not split here: callers that read
// raw output should split tqdm's `\r`-separated updates first (Parser.Line
// does).
func ParseLine(raw string) Line {
	s := strings.TrimRight(StripANSI(raw), "\r\n")
	l := Line{Raw: s}

	hdr := headerRE.FindStringSubmatchIndex(s)
	if m := procRE.FindStringSubmatchIndex(s); m != nil && (hdr == nil || m[0] < hdr[0]) {
		// Accept the prefix only at the start of the line or before the
		// header, so a message that mentions "(x pid=1)" is left alone.
		if m[0] == 0 || hdr != nil || strings.TrimSpace(s[:m[0]]) == "" {
			l.Process = s[m[2]:m[3]]
			l.PID, _ = strconv.Atoi(s[m[4]:m[5]])
			s = s[:m[0]] + s[m[1]:]
			hdr = headerRE.FindStringSubmatchIndex(s)
		}
	}
	if hdr != nil {
		l.Level = s[hdr[2]:hdr[3]]
		l.Time = s[hdr[4]:hdr[5]]
		l.File = s[hdr[6]:hdr[7]]
		l.LineNo, _ = strconv.Atoi(s[hdr[8]:hdr[9]])
		l.Message = s[hdr[10]:hdr[11]]
		return l
	}
	if m := uvicornRE.FindStringSubmatch(s); m != nil {
		l.Level = m[1]
		l.Message = m[2]
		return l
	}
	l.Message = strings.TrimSpace(s)
	return l
}

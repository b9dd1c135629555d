package sim

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Process names of vLLM 0.11's log-line prefixes.
const (
	procAPI    = "APIServer"
	procEngine = "EngineCore_DP0"
)

// vlog writes vLLM-format log lines:
//
//	(APIServer pid=N) INFO MM-DD HH:MM:SS [file.py:LINE] message
//
// without ANSI colour. A multi-line message repeats the prefix on every line,
// as vLLM's formatter does. The simulator is one process, so both the API
// server and the engine core lines carry its real pid. vlog is safe for
// concurrent use.
type vlog struct {
	mu  sync.Mutex
	w   io.Writer
	pid int
	now func() time.Time
}

// line logs one message at level from file:lineno in process proc.
func (l *vlog) line(proc, level, file string, lineno int, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	head := fmt.Sprintf("(%s pid=%d) %s %s [%s:%d] ", proc, l.pid, level, l.now().Format("01-02 15:04:05"), file, lineno)
	var b strings.Builder
	for _, s := range strings.Split(msg, "\n") {
		b.WriteString(head)
		b.WriteString(s)
		b.WriteByte('\n')
	}
	l.write(b.String())
}

// info logs at INFO.
func (l *vlog) info(proc, file string, lineno int, format string, args ...any) {
	l.line(proc, "INFO", file, lineno, format, args...)
}

// raw writes text that bypasses vLLM's formatter (uvicorn, tracebacks) with
// only the process prefix, one line per text line.
func (l *vlog) raw(proc, text string) {
	var b strings.Builder
	for _, s := range strings.Split(text, "\n") {
		fmt.Fprintf(&b, "(%s pid=%d) %s\n", proc, l.pid, s)
	}
	l.write(b.String())
}

func (l *vlog) write(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s) //nolint:errcheck // a lost log line must not stop the engine
}

//go:build linux

// Package e2eutil is what the multi-process test suites (e2e and
// e2e/netns) share: the binary under test, polling, and ttftlab processes
// run in their own process groups with their output kept for matching and
// for the post-mortem. It is imported by tests only.
package e2eutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bin returns the binary under test that TTFTLAB_BIN names, or skips the
// test; how says how to build and set it.
func Bin(t *testing.T, how string) string {
	t.Helper()
	bin := os.Getenv("TTFTLAB_BIN")
	if bin == "" {
		t.Skip("TTFTLAB_BIN not set: " + how)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatalf("TTFTLAB_BIN %q: %v", bin, err)
	}
	if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("TTFTLAB_BIN %q is not an executable file (%v): build it with `go build -o bin/ttftlab ./cmd/ttftlab`", bin, err)
	}
	return abs
}

// WaitUntil polls cond every poll until it returns true or timeout passes;
// it fails the test with what, and the last error cond gave, on timeout.
func WaitUntil(t *testing.T, timeout, poll time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(poll)
	}
}

// LogBuf keeps a process's output in memory, for matching, and in a file,
// for the post-mortem.
type LogBuf struct {
	mu  sync.Mutex
	f   *os.File
	buf bytes.Buffer
}

func (l *LogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	return l.f.Write(p)
}

// String returns everything written so far.
func (l *LogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Proc is one process in its own process group.
type Proc struct {
	T    *testing.T
	Name string
	Cmd  *exec.Cmd
	// Log is the process's stderr, and its stdout too when Out is nil.
	Log, Out *LogBuf
	LogPath  string
	done     chan struct{} // closed once the process is reaped
	err      error         // Wait's result, valid after done
}

// Start runs argv as name in dir, in its own process group that dies with
// the test binary. With combined, stdout and stderr go to dir/name.log;
// otherwise to dir/name.stderr (Log) and dir/name.stdout (Out). The group
// is SIGKILLed in t.Cleanup, and the output dumped when the test failed.
func Start(t *testing.T, dir, name string, combined bool, argv ...string) *Proc {
	t.Helper()
	p := &Proc{T: t, Name: name, done: make(chan struct{})}
	var files []*os.File
	open := func(suffix string) *LogBuf {
		f, err := os.Create(filepath.Join(dir, name+suffix))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		return &LogBuf{f: f}
	}
	p.Cmd = exec.Command(argv[0], argv[1:]...)
	p.Cmd.Dir = dir
	if combined {
		p.LogPath = filepath.Join(dir, name+".log")
		p.Log = open(".log")
		p.Cmd.Stdout, p.Cmd.Stderr = p.Log, p.Log
	} else {
		p.LogPath = filepath.Join(dir, name+".stderr")
		p.Log, p.Out = open(".stderr"), open(".stdout")
		p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Log
	}
	// Its own group, so a kill reaches whatever it forked (a gpunode's
	// engine); and it dies with the test binary, so a crashed test leaves
	// nothing behind.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		for _, f := range files {
			f.Close()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("---- %s (pid %d) %s; log (%s):\n%s", name, p.Pid(), strings.Join(argv, " "), p.LogPath, Tail(p.Log.String(), 12_000))
			if p.Out != nil {
				if s := p.Out.String(); s != "" {
					t.Logf("---- %s stdout:\n%s", name, Tail(s, 4_000))
				}
			}
		}
	})
	return p
}

// Tail returns the last n bytes of s, marked when cut.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Kill SIGKILLs the process group and waits until the process is reaped.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.T.Errorf("%s (pid %d) not reaped 10 s after SIGKILL", p.Name, p.Pid())
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error; nil while it runs.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Wait waits up to timeout for the process to exit and returns Wait's error.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// WaitLog waits until the process's output matches re and returns the
// submatches; it fails at once when the process exits first.
func (p *Proc) WaitLog(re *regexp.Regexp, timeout time.Duration) []string {
	p.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.Log.String()); m != nil {
			return m
		}
		if p.Out != nil {
			if m := re.FindStringSubmatch(p.Out.String()); m != nil {
				return m
			}
		}
		if p.Exited() {
			p.T.Fatalf("%s exited (%v) before logging /%s/:\n%s", p.Name, p.err, re, Tail(p.Log.String(), 4000))
		}
		if time.Now().After(deadline) {
			p.T.Fatalf("%s did not log /%s/ within %s", p.Name, re, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ReadJSON decodes the JSON file at path into v, failing the test.
func ReadJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

// U64 is a protojson uint64: a JSON string, or a number.
type U64 uint64

func (u *U64) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseUint(strings.Trim(string(b), `"`), 10, 64)
	*u = U64(v)
	return err
}

package gpunode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// Launcher builds the command that runs an engine. It must not start it.
// The supervisor sets the process group, the parent-death signal, stdout
// and stderr on the returned command, so a Launcher need only pick the
// executable, arguments and environment. Tests inject one that re-executes
// the test binary as a fake engine.
type Launcher func(ctx context.Context, argv []string, env []string) *exec.Cmd

// ExecLauncher is the default Launcher: it runs argv[0] from PATH with env.
// It does not use exec.CommandContext, because the supervisor stops engines
// itself, by process group and with a grace period.
func ExecLauncher(_ context.Context, argv []string, env []string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	return cmd
}

// LogLine is one line of engine output, stamped on arrival.
type LogLine struct {
	// At is the arrival offset since spawn, from the monotonic clock.
	At   time.Duration
	Text string
}

// ring keeps the last lines of output. It is safe for concurrent use.
type ring struct {
	mu    sync.Mutex
	lines []LogLine
	next  int
	full  bool
}

func newRing(n int) *ring { return &ring{lines: make([]LogLine, n)} }

func (r *ring) add(l LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = l
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
}

// tail returns the last n lines, oldest first.
func (r *ring) tail(n int) []LogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := r.next
	if r.full {
		size = len(r.lines)
	}
	n = min(n, size)
	out := make([]LogLine, 0, n)
	for i := range n {
		idx := (r.next - n + i + len(r.lines)) % len(r.lines)
		out = append(out, r.lines[idx])
	}
	return out
}

// maxLineBytes bounds one log line; longer lines are cut (vLLM's config
// dumps can run to tens of kilobytes).
const maxLineBytes = 64 << 10

// process is one running engine process and the goroutines that watch it.
// Its goroutines are joined by wait.
type process struct {
	log    *slog.Logger
	cmd    *exec.Cmd
	argv   []string
	pid    int
	spawn  time.Time
	parser *vllmlog.Parser
	ring   *ring

	// exited is closed once the leader has been reaped; exitStatus and
	// exitErr are set before. done is closed after that, once its output
	// has been read to the end (or given up on).
	exited     chan struct{}
	done       chan struct{}
	exitStatus string
	exitErr    error

	readerDone chan struct{}
	readEnd    *os.File
	logFile    *os.File

	// stopping is set by stop before it signals the group, so that reap
	// can tell an expected stop from an exit of the engine's own.
	stopping atomic.Bool
	// onExit, when set, is called once by reap when the engine exits
	// without a stop.
	onExit func(Exit)
}

// Exit describes an engine process that ended on its own: not by a
// StopEngine call or a restart, which the node expects.
type Exit struct {
	Time time.Time
	PID  int
	// ExitCode is the exit status, or -1 when a signal ended the process.
	ExitCode int
	// Signal names the signal that ended it ("SIGKILL"), or is empty.
	Signal string
	// Status is as os.ProcessState writes it: "signal: killed".
	Status string
	// LogTail is the engine's last output lines, oldest first.
	LogTail []string
	// Uptime is how long the process ran, on the monotonic clock.
	Uptime time.Duration
}

// exitTailLines and exitLineBytes bound the log tail an Exit carries, so
// that it fits one gRPC message with room to spare.
const (
	exitTailLines = 50
	exitLineBytes = 2 << 10
)

// exitTailWait is how long reap waits for the output to reach EOF before
// it reports an unexpected exit, so that the tail holds the engine's last
// words without delaying the news (a grandchild can hold the pipe open).
const exitTailWait = 250 * time.Millisecond

// spawnConfig is what spawn needs.
type spawnConfig struct {
	launcher Launcher
	argv     []string
	env      []string
	logDir   string
	name     string
	ringSize int
	// onExit, when set, is told of an exit that no stop asked for.
	onExit func(Exit)
}

// spawn starts an engine in its own process group and starts the
// goroutines that capture its output and reap it.
//
// Orphan guarantee. While the node runs, stop ends the whole process
// group: SIGTERM, SIGKILL after the grace period, then SIGKILL again until
// no live member is left, so every process the engine forked that stayed
// in its group dies, whatever its parent did. When the node itself dies —
// even by SIGKILL, which it cannot catch — the kernel sends the engine
// leader SIGTERM (PR_SET_PDEATHSIG; it fires when the thread that forked
// the engine exits, and Go's runtime keeps its threads). The leader's own
// children are then ended by the engine's own parent-death handling, not
// by the node: real vLLM's API server handles SIGTERM by shutting down its
// EngineCore process, and its EngineCore and worker processes also watch
// their parent and exit when it is gone (in V1 since about 0.9, a worker
// exits when the "death pipe" from its parent closes). The node does not
// rely on that beyond the leader. TestNoOrphanAfterSupervisorSIGKILL
// proves the chain with a fake engine whose worker sets its own
// parent-death signal: the engine and its worker are gone within 2 s of
// the node's SIGKILL. Not covered: a process that leaves the group
// (setsid, or a daemon that double-forks) and has no parent-death
// handling of its own, after the node was SIGKILLed. The node does not
// make itself a child subreaper (PR_SET_CHILD_SUBREAPER): that would only
// help while it lives, when the group kill already reaches those
// processes, and it would have to reap adopted zombies behind os/exec's
// back.
func spawn(ctx context.Context, log *slog.Logger, sc spawnConfig) (*process, error) {
	cmd := sc.launcher(ctx, sc.argv, sc.env)
	if cmd == nil {
		return nil, errors.New("launcher returned no command")
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Its own group lets Stop signal the engine and every child it forks;
	// the parent-death signal takes the leader down with the node. (It fires
	// when the forking OS thread exits; Go's runtime keeps those threads.)
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM

	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("engine output pipe: %w", err)
	}
	// One pipe for both streams keeps stdout and stderr in order.
	cmd.Stdout, cmd.Stderr = w, w

	var logFile *os.File
	if sc.logDir != "" {
		if err := os.MkdirAll(sc.logDir, 0o755); err != nil {
			r.Close()
			w.Close()
			return nil, fmt.Errorf("create log dir: %w", err)
		}
		name := fmt.Sprintf("engine-%s-%s.log", sc.name, time.Now().UTC().Format("20060102T150405.000000000Z"))
		logFile, err = os.OpenFile(filepath.Join(sc.logDir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			r.Close()
			w.Close()
			return nil, fmt.Errorf("create engine log: %w", err)
		}
	}

	spawnAt := time.Now()
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start engine %q: %w", sc.argv[0], err)
	}
	w.Close() // the child holds its own copy

	p := &process{
		log:        log.With("pid", cmd.Process.Pid),
		cmd:        cmd,
		argv:       sc.argv,
		pid:        cmd.Process.Pid,
		spawn:      spawnAt,
		parser:     vllmlog.NewParser(spawnAt),
		ring:       newRing(sc.ringSize),
		exited:     make(chan struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		readEnd:    r,
		logFile:    logFile,
		onExit:     sc.onExit,
	}
	go p.read()
	go p.reap()
	return p, nil
}

// read captures output line by line until EOF.
func (p *process) read() {
	defer close(p.readerDone)
	br := bufio.NewReaderSize(p.readEnd, 64<<10)
	var partial []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if len(chunk) > 0 || (err == nil && !isPrefix) {
			if len(partial)+len(chunk) <= maxLineBytes {
				partial = append(partial, chunk...)
			}
			if !isPrefix {
				p.line(string(partial))
				partial = partial[:0]
			}
		}
		if err != nil {
			if len(partial) > 0 {
				p.line(string(partial))
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				p.log.Warn("engine output read failed", "err", err)
			}
			return
		}
	}
}

func (p *process) line(text string) {
	now := time.Now()
	text = strings.TrimRight(text, "\r")
	p.parser.Line(now, text)
	if p.logFile != nil {
		// Best effort: a full disk must not stop the engine.
		_, _ = p.logFile.WriteString(text + "\n")
	}
	// A tqdm bar rewrites itself with '\r'; keep what a terminal would show.
	if i := strings.LastIndexByte(text, '\r'); i >= 0 {
		text = text[i+1:]
	}
	p.ring.add(LogLine{At: now.Sub(p.spawn), Text: text})
}

// outputDrainTimeout bounds the wait for EOF after the leader exits: a
// daemonised grandchild that escaped the group can hold the pipe open.
const outputDrainTimeout = 2 * time.Second

// reap waits for the leader to exit, then for its output to end.
func (p *process) reap() {
	p.exitErr = p.cmd.Wait()
	exitAt := time.Now()
	// A stop sets the flag before it signals, so an exit it caused reads it.
	expected := p.stopping.Load()
	p.exitStatus = p.cmd.ProcessState.String()
	close(p.exited)
	if !expected && p.onExit != nil {
		t := time.NewTimer(exitTailWait)
		select {
		case <-p.readerDone:
		case <-t.C:
		}
		t.Stop()
		ex := p.exitInfo(exitAt)
		p.log.Warn("engine exited unexpectedly", "status", ex.Status, "uptime", ex.Uptime)
		p.onExit(ex)
	}
	select {
	case <-p.readerDone:
	case <-time.After(outputDrainTimeout):
		p.log.Warn("engine output still open after exit; closing it")
		p.readEnd.Close()
		<-p.readerDone
	}
	p.readEnd.Close()
	if p.logFile != nil {
		p.logFile.Close()
	}
	close(p.done)
}

// exitInfo describes the reaped process's exit.
func (p *process) exitInfo(at time.Time) Exit {
	ex := Exit{Time: at, PID: p.pid, ExitCode: -1, Status: p.exitStatus, Uptime: at.Sub(p.spawn)}
	if st := p.cmd.ProcessState; st != nil {
		ex.ExitCode = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ex.ExitCode = -1
			ex.Signal = unix.SignalName(ws.Signal())
			if ex.Signal == "" {
				ex.Signal = fmt.Sprintf("signal %d", int(ws.Signal()))
			}
		}
	}
	for _, l := range p.tailText(exitTailLines) {
		ex.LogTail = append(ex.LogTail, clip(strings.ToValidUTF8(l, "\uFFFD"), exitLineBytes))
	}
	return ex
}

// hasExited reports whether the leader has exited and been reaped.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// tailText returns the last n lines of output as text.
func (p *process) tailText(n int) []string {
	lines := p.ring.tail(n)
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

// stop ends the process group: SIGTERM, then SIGKILL after grace, then it
// waits until the leader is reaped and no live process is left in the
// group. It is safe to call on an exited process, more than once, and
// concurrently.
func (p *process) stop(grace time.Duration) {
	p.stopping.Store(true)
	pgid := p.pid
	if !p.hasExited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.exited:
			t.Stop()
		case <-t.C:
			p.log.Warn("engine ignored SIGTERM; killing its process group", "grace", grace)
		}
	}
	// Children may outlive the leader (or ignore SIGTERM); kill what is
	// left of the group, even after a clean exit.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	waitGroupGone(pgid, "/proc", p.log)
}

// groupPollInterval is how often waitGroupGone checks the group.
const groupPollInterval = 5 * time.Millisecond

// groupGoneTimeout bounds waitGroupGone; SIGKILL cannot be ignored, so only
// a process in uninterruptible sleep (a GPU driver call) takes longer.
const groupGoneTimeout = 10 * time.Second

// waitGroupGone kills and waits until no live (non-zombie) process is left
// in the process group pgid. Orphaned members are reparented to init,
// which reaps them.
func waitGroupGone(pgid int, procRoot string, log *slog.Logger) {
	deadline := time.Now().Add(groupGoneTimeout)
	for {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if !groupHasLiveMember(procRoot, pgid) {
			return
		}
		if time.Now().After(deadline) {
			log.Error("engine process group still has live members after SIGKILL", "pgid", pgid)
			return
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(groupPollInterval)
	}
}

// groupHasLiveMember scans procRoot for a process in group pgid that is not
// a zombie. On a read error it assumes there is one.
func groupHasLiveMember(procRoot string, pgid int) bool {
	stats, err := readAllStats(procRoot)
	if err != nil {
		return true
	}
	for _, s := range stats {
		if s.pgrp == pgid && s.state != 'Z' && s.state != 'X' {
			return true
		}
	}
	return false
}

package gpunode

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// miniSupervisor is a gpunode-like process for TestNoOrphanAfterSupervisorSIGKILL:
// it spawns a fake engine that forks a worker, exactly as the node does
// (spawn: own process group, parent-death signal), prints both pids, and
// waits to be killed.
func miniSupervisor() int {
	time.AfterFunc(fakeLifetime, func() { os.Exit(3) })
	port, err := FreePort("127.0.0.1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	p, err := spawn(context.Background(), slog.New(slog.DiscardHandler), spawnConfig{
		launcher: fakeLauncher(),
		argv:     []string{"fake:childpd", "test/model", "--port", strconv.Itoa(port), "--served-model-name", "m"},
		env:      os.Environ(),
		ringSize: 100,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range p.tailText(100) {
			if v, ok := strings.CutPrefix(l, "CHILD_PID="); ok {
				fmt.Printf("ENGINE_PID=%d CHILD_PID=%s\n", p.pid, v)
				select {} // until SIGKILL
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "engine printed no CHILD_PID")
	return 2
}

// procGone reports whether pid no longer runs: it does not exist, or it
// is a zombie waiting for a parent (init) to reap it.
func procGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	fs, err := procfs.NewFS("/proc")
	if err != nil {
		return true
	}
	s, err := readProcStat(fs, pid)
	if err != nil {
		return true
	}
	return s.state == 'Z' || s.state == 'X'
}

// TestNoOrphanAfterSupervisorSIGKILL kills a gpunode-like supervisor with
// SIGKILL, which no code of its can catch, and checks that its engine and
// the engine's worker are gone within 2 s. See spawn for the guarantee.
func TestNoOrphanAfterSupervisorSIGKILL(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeModeEnv+"=supervisor", "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ENGINE_PID=") {
				line <- sc.Text()
				return
			}
		}
		close(line)
	}()
	var enginePID, childPID int
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatal("the supervisor exited without reporting its engine")
		}
		if _, err := fmt.Sscanf(l, "ENGINE_PID=%d CHILD_PID=%d", &enginePID, &childPID); err != nil {
			t.Fatalf("parse %q: %v", l, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no ENGINE_PID line from the supervisor in 20 s")
	}
	t.Cleanup(func() {
		// If the test fails, leave nothing behind.
		_ = syscall.Kill(-enginePID, syscall.SIGKILL)
		_ = syscall.Kill(childPID, syscall.SIGKILL)
	})
	for _, pid := range []int{enginePID, childPID} {
		if procGone(pid) {
			t.Fatalf("pid %d is not running before the supervisor is killed", pid)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()

	deadline := killed.Add(2 * time.Second)
	for !(procGone(enginePID) && procGone(childPID)) {
		if time.Now().After(deadline) {
			t.Fatalf("2 s after the supervisor's SIGKILL: engine %d gone %v, its worker %d gone %v; want both gone",
				enginePID, procGone(enginePID), childPID, procGone(childPID))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("engine %d and worker %d gone %v after the supervisor's SIGKILL", enginePID, childPID, time.Since(killed))
}

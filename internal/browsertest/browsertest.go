// Package browsertest drives a headless Chromium for tests of the HTML
// report and the live dashboard: it finds the browser, records every
// console error, uncaught exception and browser-log error of the page, and
// saves screenshots to the test's artefact directory.
//
// The tests run only when TTFTLAB_BROWSER is set (`make test-browser`, which
// installs Debian's chromium first through scripts/install-chromium.sh);
// otherwise, or when no browser is found, they are skipped with the reason.
// TTFTLAB_BROWSER=require turns a missing browser into a failure.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Env is the variable that enables the browser tests.
const Env = "TTFTLAB_BROWSER"

// Browser is a headless Chromium tab and the console messages it logged.
type Browser struct {
	// Ctx runs chromedp actions in the tab.
	Ctx context.Context

	mu      sync.Mutex
	errs    []string
	all     []string
	readers sync.WaitGroup
}

// findChromium returns the path of a Chromium or Chrome binary, or "".
func findChromium() string {
	if p := os.Getenv("TTFTLAB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts a headless Chromium for t, or skips t with the reason; the
// browser is stopped when t ends, within timeout in all.
func New(t *testing.T, timeout time.Duration) *Browser {
	t.Helper()
	mode := os.Getenv(Env)
	if mode == "" {
		t.Skipf("browser test: set %s=1 to run it (make test-browser installs chromium and does)", Env)
	}
	path := findChromium()
	if path == "" {
		if mode == "require" {
			t.Fatalf("%s=require but no chromium found: run scripts/install-chromium.sh or set TTFTLAB_CHROMIUM", Env)
		}
		t.Skipf("browser test: no chromium on PATH (run scripts/install-chromium.sh, or set TTFTLAB_CHROMIUM to a Chromium binary)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless,
		chromedp.WindowSize(1200, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	ctx, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	b := &Browser{Ctx: bctx}
	// Start the browser and subscribe to the console before any page loads.
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	msgs := chromedp.Console(bctx)
	b.readers.Add(1)
	go func() {
		defer b.readers.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.all = append(b.all, m.String())
			if m.Type == chromedp.ConsoleError || m.IsException() {
				where := m.URL
				if where != "" {
					where += ": "
				}
				b.errs = append(b.errs, where+m.String())
			}
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
		b.readers.Wait()
	})
	return b
}

// Errors returns the console errors and exceptions seen so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...)
}

// CheckConsole fails t for every console error or exception seen so far,
// and logs the whole console.
func (b *Browser) CheckConsole(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	all := append([]string(nil), b.all...)
	b.mu.Unlock()
	for _, m := range all {
		t.Logf("console: %s", m)
	}
	for _, e := range b.Errors() {
		t.Errorf("page logged an error: %s", e)
	}
}

// Screenshot saves a full-page PNG as name in t's artefact directory
// (kept with `go test -artifacts`) and returns its path.
func (b *Browser) Screenshot(t *testing.T, name string) string {
	t.Helper()
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	return path
}

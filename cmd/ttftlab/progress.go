package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// isTerminal reports whether w is a terminal: a character device, or a
// writer that says so itself (tests' fake terminals).
func isTerminal(w io.Writer) bool {
	if t, ok := w.(interface{ IsTerminal() bool }); ok {
		return t.IsTerminal()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressMode is --progress: auto shows progress when stderr is a
// terminal, on and off force it.
type progressMode string

func (p *progressMode) String() string {
	if p == nil || *p == "" {
		return "auto"
	}
	return string(*p)
}

func (p *progressMode) Set(s string) error {
	switch s {
	case "auto", "on", "off":
		*p = progressMode(s)
		return nil
	case "true", "1":
		*p = "on"
		return nil
	case "false", "0":
		*p = "off"
		return nil
	}
	return fmt.Errorf("%q is not a progress mode: use auto (when stderr is a terminal), on or off", s)
}

// IsBoolFlag lets --progress stand alone for "on".
func (p *progressMode) IsBoolFlag() bool { return true }

// enabled says whether progress goes to stderr.
func (p progressMode) enabled(stderr io.Writer) bool {
	switch p {
	case "on":
		return true
	case "off":
		return false
	}
	return isTerminal(stderr)
}

// progressLine renders one progress line of a run: done of total (or of
// the time bound), the rate, the time left (the sooner of the request and
// the time bound; n/a before any request finished), and the errors.
func progressLine(elapsed time.Duration, done, failed uint64, totalReqs int64, bound time.Duration, inFlight int) string {
	secs := elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done) / secs
	}
	of := fmt.Sprintf("%d", done)
	left := time.Duration(-1)
	if totalReqs > 0 {
		of = fmt.Sprintf("%d of %d (%.0f%%)", done, totalReqs, 100*float64(done)/float64(totalReqs))
		if rate > 0 {
			left = time.Duration(float64(max(totalReqs-int64(done), 0)) / rate * float64(time.Second))
		}
	}
	if bound > 0 {
		of += fmt.Sprintf(", %s of %s", elapsed.Round(time.Second), bound)
		if l := max(bound-elapsed, 0); left < 0 || l < left {
			left = l
		}
	}
	leftS := "n/a"
	if left >= 0 {
		leftS = left.Round(time.Second).String()
	}
	return fmt.Sprintf("%6.1fs  %s done  %.1f req/s  %s left  %d errors  %d in flight", secs, of, rate, leftS, failed, inFlight)
}

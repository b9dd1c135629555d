package vllmlog

import (
	"time"
	"unicode/utf8"
)

// stampClock turns vLLM's "MM-DD HH:MM:SS" timestamps, which carry no year,
// into times on one line: a date that goes backwards by more than a month
// is taken to be in the next year (a log that runs across new year), and a
// day change is just a date change (across midnight). Times are in UTC
// only as a label: vLLM writes the container's local time, and only
// differences are used.
type stampClock struct {
	ok          bool
	year        int
	first, last time.Time
}

// stampEpochYear is a leap year, so that "02-29" parses.
const stampEpochYear = 2000

// wrapBackstep is how far a date may go backwards before it is read as the
// next year; log lines from several processes may be a little out of order.
const wrapBackstep = 30 * 24 * time.Hour

// parseStamp parses "MM-DD HH:MM:SS" in year.
func parseStamp(s string, year int) (time.Time, bool) {
	// Fixed layout: 01-23 15:50:06
	if len(s) != 14 || s[2] != '-' || s[5] != ' ' || s[8] != ':' || s[11] != ':' {
		return time.Time{}, false
	}
	n := func(i int) (int, bool) {
		a, b := s[i], s[i+1]
		if a < '0' || a > '9' || b < '0' || b > '9' {
			return 0, false
		}
		return int(a-'0')*10 + int(b-'0'), true
	}
	mo, ok1 := n(0)
	d, ok2 := n(3)
	h, ok3 := n(6)
	mi, ok4 := n(9)
	se, ok5 := n(12)
	if !(ok1 && ok2 && ok3 && ok4 && ok5) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(mo), d, h, mi, se, 0, time.UTC), true
}

// observe records one timestamp; malformed ones are ignored.
func (c *stampClock) observe(s string) {
	if !c.ok {
		t, ok := parseStamp(s, stampEpochYear)
		if !ok {
			return
		}
		c.ok, c.year, c.first, c.last = true, stampEpochYear, t, t
		return
	}
	t, ok := parseStamp(s, c.year)
	if !ok {
		return
	}
	if t.Before(c.last.Add(-wrapBackstep)) {
		c.year++
		t, _ = parseStamp(s, c.year)
	}
	if t.After(c.last) {
		c.last = t
	}
}

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
